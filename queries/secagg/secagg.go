package secagg

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
)

// Domain separators for every derivation in this package.
const (
	keyDomain  = "samsyn/secagg/x25519/v1"
	maskDomain = "samsyn/secagg/mask/v1"
)

// Scale is the fixed-point factor of measure sums: a value x travels as round(x·Scale)
// modulo 2^64, so sums of up to about 9·10^15 in magnitude survive exactly.
const Scale = 1 << 10

// Fixed encodes x in fixed point (two's complement modulo 2^64).
func Fixed(x float64) uint64 { return uint64(int64(math.Round(x * Scale))) }

// Float decodes a fixed-point value.
func Float(u uint64) float64 { return float64(int64(u)) / Scale }

// DeriveKey derives a node's X25519 key pair from its node secret, so there is no further
// secret file to guard, back up or rotate apart from the secret itself.
func DeriveKey(secret []byte) (*ecdh.PrivateKey, error) {
	if len(secret) < 16 {
		return nil, errors.New("secagg: node secret too short")
	}
	raw, err := hkdf.Key(sha256.New, secret, nil, keyDomain, 32)
	if err != nil {
		return nil, fmt.Errorf("secagg: derive key: %w", err)
	}
	return ecdh.X25519().NewPrivateKey(raw)
}

// ParsePublic reads a peer's public key in hex, as pinned in node configuration.
func ParsePublic(s string) (*ecdh.PublicKey, error) {
	raw, err := hex.DecodeString(s)
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("aggregation key %q: expected 64 hex characters (an X25519 public key)", s)
	}
	return ecdh.X25519().NewPublicKey(raw)
}

// PublicHex writes a public key as ParsePublic reads it.
func PublicHex(k *ecdh.PublicKey) string { return hex.EncodeToString(k.Bytes()) }

// Round names one aggregation: everything a mask is bound to.
type Round struct {
	Study     string
	QueryID   string
	QueryHash string
	Params    string   // canonical parameter text
	Cohort    []string // sorted, distinct association ids
	Round     int
	Length    int // number of elements in each vector
}

// Errors of Mask.
var (
	ErrNotInCohort = errors.New("secagg: this node is not in the cohort")
	ErrNoPeerKey   = errors.New("secagg: no pinned aggregation key for a cohort member")
	ErrCohort      = errors.New("secagg: cohort is not a sorted list of distinct ids")
)

// Check validates the round's cohort.
func (r Round) Check() error {
	if len(r.Cohort) < 2 || !slices.IsSorted(r.Cohort) || len(slices.Compact(slices.Clone(r.Cohort))) != len(r.Cohort) {
		return ErrCohort
	}
	if r.Round < 1 || r.Length < 0 {
		return fmt.Errorf("secagg: round %d, length %d: expected a round from 1 and a length of zero or more", r.Round, r.Length)
	}
	return nil
}

// info is the HKDF info binding a pair's mask to the round and to the ordered pair.
func (r Round) info(lo, hi string) []byte {
	var b bytes.Buffer
	b.WriteString(maskDomain)
	ns := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
		b.WriteByte(',')
	}
	ns(r.Study)
	ns(r.QueryID)
	ns(r.QueryHash)
	ns(r.Params)
	ns(strconv.Itoa(len(r.Cohort)))
	for _, c := range r.Cohort {
		ns(c)
	}
	ns(strconv.Itoa(r.Round))
	ns(strconv.Itoa(r.Length))
	ns(lo)
	ns(hi)
	return b.Bytes()
}

// Mask returns vec plus, for every other member of the cohort, the mask shared with that
// member: added when self sorts before it, subtracted otherwise, so the masks cancel in the
// cohort's sum. vec itself is not changed.
func Mask(self string, priv *ecdh.PrivateKey, peers map[string]*ecdh.PublicKey, r Round, vec []uint64) ([]uint64, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	if len(vec) != r.Length {
		return nil, fmt.Errorf("secagg: vector of %d elements, the round says %d", len(vec), r.Length)
	}
	if !slices.Contains(r.Cohort, self) {
		return nil, ErrNotInCohort
	}
	out := slices.Clone(vec)
	stream := make([]byte, 8*len(vec))
	for _, other := range r.Cohort {
		if other == self {
			continue
		}
		pub, ok := peers[other]
		if !ok || pub == nil {
			return nil, fmt.Errorf("%w: %s", ErrNoPeerKey, other)
		}
		shared, err := agree(priv, pub)
		if err != nil {
			return nil, fmt.Errorf("secagg: agree with %s: %w", other, err)
		}
		lo, hi := self, other
		if hi < lo {
			lo, hi = hi, lo
		}
		if err := keyStream(shared, r.info(lo, hi), stream); err != nil {
			return nil, err
		}
		add := self < other
		for i := range out {
			m := binary.LittleEndian.Uint64(stream[8*i:])
			if add {
				out[i] += m
			} else {
				out[i] -= m
			}
		}
	}
	return out, nil
}

// sharedSecrets remembers each pair's X25519 agreement: both keys are static (derived from
// node secrets and pinned), so the agreement is too, and it was the costliest step of a
// node's contribution. The masks still differ per round: the round is in the key expansion.
// It holds what the private keys it was computed from already give, in this process only.
var sharedSecrets sync.Map // [64]byte{own public key, peer public key} -> []byte

func agree(priv *ecdh.PrivateKey, pub *ecdh.PublicKey) ([]byte, error) {
	var id [64]byte
	copy(id[:32], priv.PublicKey().Bytes())
	copy(id[32:], pub.Bytes())
	if v, ok := sharedSecrets.Load(id); ok {
		return v.([]byte), nil
	}
	shared, err := priv.ECDH(pub)
	if err != nil {
		return nil, err
	}
	sharedSecrets.Store(id, shared)
	return shared, nil
}

// keyStream fills dst with the AES-256-CTR key stream of a key derived from shared and info.
func keyStream(shared, info []byte, dst []byte) error {
	key, err := hkdf.Key(sha256.New, shared, nil, string(info), 32)
	if err != nil {
		return fmt.Errorf("secagg: expand mask key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	clear(dst)
	cipher.NewCTR(block, make([]byte, aes.BlockSize)).XORKeyStream(dst, dst)
	return nil
}

// Sum adds vectors element-wise modulo 2^64. Every vector must have the same length.
func Sum(vecs ...[]uint64) ([]uint64, error) {
	if len(vecs) == 0 {
		return nil, errors.New("secagg: nothing to sum")
	}
	out := make([]uint64, len(vecs[0]))
	for i, v := range vecs {
		if len(v) != len(out) {
			return nil, fmt.Errorf("secagg: vector %d has %d elements, the first %d", i, len(v), len(out))
		}
		for j, x := range v {
			out[j] += x
		}
	}
	return out, nil
}
