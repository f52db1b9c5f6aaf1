package importer

import (
	"crypto/hmac"
	"crypto/sha256"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"regexp"
	"sync"

	"github.com/marcboeker/go-duckdb"

	"github.com/samsyn/samsyn/schemas/personnummer"
)

// Identity columns an export may carry instead of participant_key; both map to it.
const (
	colPersonnummer = "personnummer"
	colAnonymousID  = "anonymous_id"
)

var identityAliases = map[string]string{
	"personnummer": colPersonnummer, "pnr": colPersonnummer, "personal_identity_number": colPersonnummer,
	"anonymous_id": colAnonymousID, "anonymt_id": colAnonymousID, "anonym_id": colAnonymousID,
}

var anonymousID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Identity outcomes, as the staging UDF returns them: "p:<key>" for a personnummer,
// "a:<key>" for an anonymous registration, "e:<code>" for a problem.
const (
	identNone      = "e:none"
	identBoth      = "e:both"
	identFormat    = "e:format"
	identDate      = "e:date"
	identCheck     = "e:check"
	identAnonymous = "e:anonymous"
)

// identityProblems says what went wrong without ever showing the number.
var identityProblems = map[string][2]string{
	identNone:      {"neither personnummer nor anonymous_id", "exactly one of them"},
	identBoth:      {"both personnummer and anonymous_id", "exactly one of them"},
	identFormat:    {"a personnummer in an unknown format (value not shown)", "YYYYMMDD-NNNC, YYYYMMDDNNNC or YYMMDD-NNNC"},
	identDate:      {"a personnummer whose date does not exist (value not shown)", "a valid personnummer"},
	identCheck:     {"a personnummer whose check digit does not match (value not shown)", "a valid personnummer"},
	identAnonymous: {"an anonymous_id with characters outside A–Z, a–z, 0–9, _ and - or longer than 64", "a short local id, e.g. anon-2021-0042"},
}

// Keyer derives participant keys from identities with the node secret. The key is the first
// 128 bits of HMAC-SHA256, hex: stable across re-imports, useless without the secret.
// The HMAC is keyed once and reused (Reset returns it to the keyed state): an import hashes
// every row. Safe for concurrent use.
type Keyer struct{ pool sync.Pool }

// NewKeyer returns a Keyer for the node secret.
func NewKeyer(secret []byte) *Keyer {
	s := append([]byte(nil), secret...)
	k := &Keyer{}
	k.pool.New = func() any { return hmac.New(sha256.New, s) }
	return k
}

func (k *Keyer) key(kind string, id []byte) string {
	m := k.pool.Get().(hash.Hash)
	m.Reset()
	io.WriteString(m, "samsyn/participant-key/v1\x00")
	io.WriteString(m, kind)
	m.Write([]byte{0})
	m.Write(id)
	var buf [sha256.Size]byte
	sum := m.Sum(buf[:0])
	k.pool.Put(m)
	return hex.EncodeToString(sum[:16])
}

// Personnummer returns the participant key of a validated personnummer.
func (k *Keyer) Personnummer(n personnummer.Number) string { return k.key("pnr", n.Canonical()) }

// Anonymous returns the participant key of an anonymous registration id.
func (k *Keyer) Anonymous(id string) string { return k.key("anon", []byte(id)) }

// Identify maps one row's identity fields to "p:<key>", "a:<key>" or "e:<problem>".
func (k *Keyer) Identify(pnr, anon string, hasPnr, hasAnon bool) string {
	switch {
	case hasPnr && hasAnon:
		return identBoth
	case hasPnr:
		n, err := personnummer.Parse(pnr)
		switch {
		case errors.Is(err, personnummer.ErrCheckDigit):
			return identCheck
		case errors.Is(err, personnummer.ErrDate):
			return identDate
		case err != nil:
			return identFormat
		}
		return "p:" + k.Personnummer(n)
	case hasAnon:
		if !anonymousID.MatchString(anon) {
			return identAnonymous
		}
		return "a:" + k.Anonymous(anon)
	default:
		return identNone
	}
}

// udf exposes Identify to the staging database as samsyn_identity(pnr, anon).
type udf struct{ k *Keyer }

var _ duckdb.ScalarFunc = udf{}

func (u udf) Config() duckdb.ScalarFuncConfig {
	v, _ := duckdb.NewTypeInfo(duckdb.TYPE_VARCHAR)
	return duckdb.ScalarFuncConfig{InputTypeInfos: []duckdb.TypeInfo{v, v}, ResultTypeInfo: v, SpecialNullHandling: true}
}

func (u udf) Executor() duckdb.ScalarFuncExecutor {
	return duckdb.ScalarFuncExecutor{RowExecutor: func(values []driver.Value) (any, error) {
		pnr, hasPnr := values[0].(string)
		anon, hasAnon := values[1].(string)
		return u.k.Identify(pnr, anon, hasPnr && pnr != "", hasAnon && anon != ""), nil
	}}
}
