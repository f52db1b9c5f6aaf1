package wire

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"
)

const (
	// Version is the only ticket payload version this package writes and accepts.
	Version = 1
	// MaxLifetime bounds Expires - NotBefore.
	MaxLifetime = 15 * time.Minute
	// DefaultSkew is the clock skew a Verifier allows when its Skew is zero.
	DefaultSkew = 30 * time.Second
	// MaxTicketSize bounds the whole wire ticket, envelope included.
	MaxTicketSize = 16 << 10
	// NonceSize is the length of a ticket nonce in bytes.
	NonceSize = 16
)

// Domain separators: every signature in Samsyn is over one of these prefixes, so a signature
// made for one purpose can never be replayed as another.
const (
	ticketDomain   = "samsyn/ticket/v1\n"
	catalogDomain  = "samsyn/catalog/v1\n"
	approvalDomain = "samsyn/approval/v1\n"
	standingDomain = "samsyn/standing-approval/v1\n"
)

// Errors returned by Verify, each wrapped with detail. Test with errors.Is; map to an audit
// code with Reason.
var (
	ErrMalformed           = errors.New("malformed ticket")
	ErrUnknownSigner       = errors.New("ticket signed by an unknown key")
	ErrBadSignature        = errors.New("bad ticket signature")
	ErrUnsupportedVersion  = errors.New("unsupported ticket version")
	ErrAssociationMismatch = errors.New("ticket is for another association")
	ErrLifetime            = errors.New("ticket lifetime too long")
	ErrNotYetValid         = errors.New("ticket not yet valid")
	ErrExpired             = errors.New("ticket expired")
	ErrHashMismatch        = errors.New("query hash does not match this node's catalog")
	ErrBadCatalogSignature = errors.New("bad catalog signature")
	ErrBadApproval         = errors.New("bad association approval")
	ErrApprovalExpired     = errors.New("the standing approval has expired")
	ErrNotAllowed          = errors.New("query not allowed by this node's policy")
	ErrReplayed            = errors.New("ticket nonce already used")
	ErrNonceStore          = errors.New("nonce store unavailable")
	ErrVerifierConfig      = errors.New("ticket verifier misconfigured")
)

// reasons lists each sentinel with its stable audit code, in the order Reason tests them.
var reasons = []struct {
	err  error
	code string
}{
	{ErrVerifierConfig, "misconfigured"},
	{ErrMalformed, "malformed"},
	{ErrUnknownSigner, "unknown_signer"},
	{ErrBadSignature, "bad_signature"},
	{ErrUnsupportedVersion, "unsupported_version"},
	{ErrAssociationMismatch, "association_mismatch"},
	{ErrLifetime, "lifetime"},
	{ErrNotYetValid, "not_yet_valid"},
	{ErrExpired, "expired"},
	{ErrHashMismatch, "hash_mismatch"},
	{ErrBadCatalogSignature, "bad_catalog_signature"},
	{ErrBadApproval, "bad_approval"},
	{ErrApprovalExpired, "approval_expired"},
	{ErrNotAllowed, "not_allowed"},
	{ErrReplayed, "replayed"},
	{ErrNonceStore, "nonce_store"},
}

// Reason maps an error from Verify to a short stable code for audit entries and the refusal
// header: "bad_signature", "unknown_signer", "hash_mismatch", "expired", "not_yet_valid",
// "replayed", "association_mismatch", "not_allowed", and so on. It returns "" for nil and
// "error" for an error that is none of this package's sentinels.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.code
		}
	}
	return "error"
}

// KeyID names a public key: the first 16 hex characters of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// CatalogMessage is what the catalog authority signs to approve a catalog entry: the domain,
// the query id and the hex content hash, separated by newlines. The hash has a fixed length,
// so the message is unambiguous.
func CatalogMessage(queryID, queryHash string) []byte {
	return []byte(catalogDomain + queryID + "\n" + queryHash)
}

// ApprovalMessage is what an association's data owner signs to approve one query of a study
// for that association. After the domain, each field is a netstring ("<len>:<bytes>,"): the
// study id, association, query id, query hash, the number of parameters, then each parameter
// name and value in sorted name order.
func ApprovalMessage(studyID, association, queryID, queryHash string, params map[string]string) []byte {
	return approvalMessage(approvalDomain, studyID, association, queryID, queryHash, params, time.Time{})
}

// StandingApprovalMessage is what a data owner signs to approve one query of a standing
// study: the same fields under their own domain, then the last day the approval holds
// (RFC 3339, UTC). Every rerun until then is answered on this one signature; after it, none.
func StandingApprovalMessage(studyID, association, queryID, queryHash string, params map[string]string, until time.Time) []byte {
	return approvalMessage(standingDomain, studyID, association, queryID, queryHash, params, until)
}

func approvalMessage(domain, studyID, association, queryID, queryHash string, params map[string]string, until time.Time) []byte {
	var b bytes.Buffer
	b.WriteString(domain)
	ns := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
		b.WriteByte(',')
	}
	ns(studyID)
	ns(association)
	ns(queryID)
	ns(queryHash)
	ns(strconv.Itoa(len(params)))
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ns(k)
		ns(params[k])
	}
	if domain == standingDomain {
		ns(until.UTC().Format(time.RFC3339))
	}
	return b.Bytes()
}

// Ticket is the payload of a Flight ticket: one query of one study for one association.
type Ticket struct {
	Version          int               `json:"v"`
	StudyID          string            `json:"study"`
	QueryID          string            `json:"query"`
	QueryHash        string            `json:"query_hash"`  // hex SHA-256 of the canonical catalog entry
	Params           map[string]string `json:"params"`      // bound parameters in canonical text form
	CatalogSignature []byte            `json:"catalog_sig"` // the catalog authority's signature over CatalogMessage
	Association      string            `json:"association"`
	Approval         []byte            `json:"approval"` // the association's signature over ApprovalMessage
	// Cohort is, for a pooled release, the sorted associations whose contributions are
	// summed, this one included; Round numbers the attempt (a cohort that loses a node is
	// asked again as a smaller cohort in a new round). Both are empty for a node's own
	// protected table.
	Cohort []string `json:"cohort,omitempty"`
	Round  int      `json:"round,omitempty"`
	// Step and State drive a pooled model: step Step (from 1) of its iteration, at the
	// coefficients State. Both are empty for a table.
	Step  int       `json:"step,omitempty"`
	State []float64 `json:"state,omitempty"`
	// Run numbers the reruns of a standing study (0 for its first release), and Until is
	// the last moment its approvals hold: the approval is then a standing approval, signed
	// over Until, and the node answers no run after it.
	Run       int       `json:"run,omitempty"`
	Until     time.Time `json:"until,omitzero"`
	Nonce     []byte    `json:"nonce"` // NonceSize random bytes
	NotBefore time.Time `json:"nbf"`
	Expires   time.Time `json:"exp"` // at most MaxLifetime after NotBefore

	// Signer is the key id of the coordinator key that signed the ticket, set by Verify.
	// It is not part of the payload.
	Signer string `json:"-"`
}

// envelope is the wire form. encoding/json writes []byte as standard base64.
type envelope struct {
	Payload []byte `json:"payload"`
	Signer  string `json:"signer"`
	Sig     []byte `json:"sig"`
}

// NewNonce returns NonceSize random bytes for a ticket.
func NewNonce() ([]byte, error) {
	n := make([]byte, NonceSize)
	if _, err := rand.Read(n); err != nil {
		return nil, fmt.Errorf("read random nonce: %w", err)
	}
	return n, nil
}

// Sign encodes t as wire bytes signed by signer. A zero Version is set to Version; times are
// written in UTC. Sign refuses a ticket Verify would reject as malformed or too long-lived.
func Sign(t Ticket, signer ed25519.PrivateKey) ([]byte, error) {
	if len(signer) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("sign ticket: signing key has %d bytes, expected an ed25519 private key", len(signer))
	}
	if t.Version == 0 {
		t.Version = Version
	}
	if t.Version != Version {
		return nil, fmt.Errorf("sign ticket: %w: %d", ErrUnsupportedVersion, t.Version)
	}
	t.NotBefore = t.NotBefore.UTC()
	t.Expires = t.Expires.UTC()
	if err := t.validate(); err != nil {
		return nil, fmt.Errorf("sign ticket: %w", err)
	}
	if err := t.checkLifetime(); err != nil {
		return nil, fmt.Errorf("sign ticket: %w", err)
	}
	payload, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("sign ticket: encode payload: %w", err)
	}
	pub := signer.Public().(ed25519.PublicKey)
	raw, err := json.Marshal(envelope{
		Payload: payload,
		Signer:  KeyID(pub),
		Sig:     ed25519.Sign(signer, signedTicketMessage(payload)),
	})
	if err != nil {
		return nil, fmt.Errorf("sign ticket: encode envelope: %w", err)
	}
	if len(raw) > MaxTicketSize {
		return nil, fmt.Errorf("sign ticket: %d bytes, more than the limit of %d", len(raw), MaxTicketSize)
	}
	return raw, nil
}

func signedTicketMessage(payload []byte) []byte {
	m := make([]byte, 0, len(ticketDomain)+len(payload))
	m = append(m, ticketDomain...)
	return append(m, payload...)
}

// validate checks the payload's form (not its signatures or time window).
func (t *Ticket) validate() error {
	switch {
	case t.StudyID == "":
		return fmt.Errorf("%w: missing study", ErrMalformed)
	case t.QueryID == "":
		return fmt.Errorf("%w: missing query", ErrMalformed)
	case !isHexSHA256(t.QueryHash):
		return fmt.Errorf("%w: query_hash is not 64 lowercase hex characters", ErrMalformed)
	case t.Association == "":
		return fmt.Errorf("%w: missing association", ErrMalformed)
	case len(t.CatalogSignature) != ed25519.SignatureSize:
		return fmt.Errorf("%w: catalog_sig has %d bytes, expected %d", ErrMalformed, len(t.CatalogSignature), ed25519.SignatureSize)
	case len(t.Approval) != ed25519.SignatureSize:
		return fmt.Errorf("%w: approval has %d bytes, expected %d", ErrMalformed, len(t.Approval), ed25519.SignatureSize)
	case len(t.Nonce) != NonceSize:
		return fmt.Errorf("%w: nonce has %d bytes, expected %d", ErrMalformed, len(t.Nonce), NonceSize)
	case t.NotBefore.IsZero() || t.Expires.IsZero():
		return fmt.Errorf("%w: missing nbf or exp", ErrMalformed)
	}
	for k := range t.Params {
		if k == "" {
			return fmt.Errorf("%w: empty parameter name", ErrMalformed)
		}
	}
	switch {
	case t.Step < 0 || len(t.State) > MaxState:
		return fmt.Errorf("%w: step %d with %d coefficients", ErrMalformed, t.Step, len(t.State))
	case (t.Step > 0) != (len(t.State) > 0):
		return fmt.Errorf("%w: a model step needs both step and state", ErrMalformed)
	case t.Step > 0 && len(t.Cohort) < 2:
		return fmt.Errorf("%w: a model step is pooled only", ErrMalformed)
	case t.Run < 0 || (t.Run > 0 && t.Until.IsZero()):
		return fmt.Errorf("%w: run %d without a standing approval", ErrMalformed, t.Run)
	}
	if len(t.Cohort) > 0 || t.Round != 0 {
		mine := false
		for i, a := range t.Cohort {
			if i > 0 && a <= t.Cohort[i-1] {
				return fmt.Errorf("%w: cohort is not sorted and distinct", ErrMalformed)
			}
			mine = mine || a == t.Association
		}
		switch {
		case len(t.Cohort) < 2:
			return fmt.Errorf("%w: a cohort has at least two associations", ErrMalformed)
		case !mine:
			return fmt.Errorf("%w: the cohort does not include the ticket's association", ErrMalformed)
		case t.Round < 1:
			return fmt.Errorf("%w: round %d: expected 1 or more", ErrMalformed, t.Round)
		}
	}
	return nil
}

// Pooled reports whether the ticket asks for a contribution to a pooled release rather
// than the node's own protected table.
func (t *Ticket) Pooled() bool { return len(t.Cohort) > 1 }

// MaxState bounds the coefficients a ticket may carry.
const MaxState = 64

// StepKey names a model step and its coefficients ("" for a table): it binds the step's
// masks and tells a repeated step from a new one.
func (t *Ticket) StepKey() string {
	if t.Step == 0 && len(t.State) == 0 {
		return ""
	}
	h := sha256.New()
	for _, v := range t.State {
		fmt.Fprintf(h, "%x\n", math.Float64bits(v))
	}
	return fmt.Sprintf("step=%d/state=%s", t.Step, hex.EncodeToString(h.Sum(nil))[:16])
}

func (t *Ticket) checkLifetime() error {
	life := t.Expires.Sub(t.NotBefore)
	if life <= 0 {
		return fmt.Errorf("%w: exp %s is not after nbf %s", ErrLifetime, t.Expires.Format(time.RFC3339), t.NotBefore.Format(time.RFC3339))
	}
	if life > MaxLifetime {
		return fmt.Errorf("%w: %s, more than %s", ErrLifetime, life, MaxLifetime)
	}
	return nil
}

func isHexSHA256(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// NonceStore remembers ticket nonces. Remember reports fresh=false if nonce was seen before
// and is still remembered; it keeps nonce at least until until.
type NonceStore interface {
	Remember(ctx context.Context, nonce []byte, until time.Time) (fresh bool, err error)
}

// Verifier holds what a node needs to accept a ticket. Every field except Now and Skew is
// required; Verify refuses every ticket if one is missing.
type Verifier struct {
	Coordinators   map[string]ed25519.PublicKey // key id -> key: who may sign tickets
	CatalogKey     ed25519.PublicKey            // the catalog authority
	Association    string                       // this node's association
	AssociationKey ed25519.PublicKey            // this association's data-owner key
	Now            func() time.Time             // default time.Now
	Skew           time.Duration                // allowed clock skew; zero means DefaultSkew
	Nonces         NonceStore
	// Allowed is the node's policy: a nil error allows the query.
	Allowed func(queryID, queryHash string) error
	// Catalog is the node's signed catalog: the hash it expects for a query id.
	Catalog func(queryID string) (hash string, ok bool)
	// Verified, when set, remembers the catalog and approval signatures that verified, so
	// that the same entry's or study's signature is checked once, not on every ticket.
	Verified *SignatureCache
}

// SignatureCache remembers ed25519 signatures that verified: key, message and signature
// together, so a signature is taken as valid only for exactly what it was checked against.
// ed25519 verification is deterministic, so a remembered success is the success a fresh check
// would give; failures are never remembered. Safe for concurrent use; bounded (it starts over
// when full).
type SignatureCache struct {
	mu sync.Mutex
	ok map[[sha256.Size]byte]struct{}
}

// maxVerified bounds a SignatureCache: a catalog's entries and the running studies' approvals.
const maxVerified = 4096

// NewSignatureCache returns an empty cache.
func NewSignatureCache() *SignatureCache {
	return &SignatureCache{ok: map[[sha256.Size]byte]struct{}{}}
}

// verify is ed25519.Verify, remembered in c (a nil c remembers nothing).
func (c *SignatureCache) verify(key ed25519.PublicKey, msg, sig []byte) bool {
	if c == nil {
		return ed25519.Verify(key, msg, sig)
	}
	h := sha256.New()
	for _, part := range [][]byte{key, msg, sig} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	var id [sha256.Size]byte
	h.Sum(id[:0])
	c.mu.Lock()
	_, seen := c.ok[id]
	c.mu.Unlock()
	if seen {
		return true
	}
	if !ed25519.Verify(key, msg, sig) {
		return false
	}
	c.mu.Lock()
	if len(c.ok) >= maxVerified {
		clear(c.ok)
	}
	c.ok[id] = struct{}{}
	c.mu.Unlock()
	return true
}

func (v *Verifier) check() error {
	var missing string
	switch {
	case len(v.Coordinators) == 0:
		missing = "coordinator keys"
	case len(v.CatalogKey) != ed25519.PublicKeySize:
		missing = "catalog authority key"
	case v.Association == "":
		missing = "association"
	case len(v.AssociationKey) != ed25519.PublicKeySize:
		missing = "association key"
	case v.Nonces == nil:
		missing = "nonce store"
	case v.Allowed == nil:
		missing = "policy"
	case v.Catalog == nil:
		missing = "catalog"
	case v.Skew < 0:
		return fmt.Errorf("%w: negative clock skew %s", ErrVerifierConfig, v.Skew)
	}
	if missing != "" {
		return fmt.Errorf("%w: no %s", ErrVerifierConfig, missing)
	}
	for id, k := range v.Coordinators {
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: coordinator key %s is not an ed25519 public key", ErrVerifierConfig, id)
		}
	}
	return nil
}

// Verify checks raw wire bytes and returns the ticket. Checks run in this order, and the
// first failure is returned: size and envelope, signer known, signature over the payload
// bytes as received, payload decoding, version, association, lifetime and time window, the
// node's catalog hash, the catalog signature, the association's approval, the node's policy,
// and last the nonce, so a ticket refused for any other reason does not use up its nonce.
//
// Both the envelope and the payload must be exactly in the form Sign writes: any other
// encoding of the same content is malformed, so no byte of an accepted ticket is unsigned or
// open to a second reading.
func Verify(ctx context.Context, raw []byte, v Verifier) (*Ticket, error) {
	if err := v.check(); err != nil {
		return nil, err
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	skew := v.Skew
	if skew == 0 {
		skew = DefaultSkew
	}

	// Envelope.
	if len(raw) > MaxTicketSize {
		return nil, fmt.Errorf("%w: %d bytes, more than the limit of %d", ErrMalformed, len(raw), MaxTicketSize)
	}
	var env envelope
	if err := decodeStrict(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if canon, err := json.Marshal(env); err != nil || !bytes.Equal(canon, raw) {
		return nil, fmt.Errorf("%w: envelope is not in canonical form", ErrMalformed)
	}

	// Signer and signature.
	key, ok := v.Coordinators[env.Signer]
	if !ok {
		return nil, fmt.Errorf("%w: signer %q", ErrUnknownSigner, env.Signer)
	}
	if len(env.Sig) != ed25519.SignatureSize || !ed25519.Verify(key, signedTicketMessage(env.Payload), env.Sig) {
		return nil, fmt.Errorf("%w: signer %s", ErrBadSignature, env.Signer)
	}

	// Payload.
	var t Ticket
	if err := decodeStrict(env.Payload, &t); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if canon, err := json.Marshal(t); err != nil || !bytes.Equal(canon, env.Payload) {
		return nil, fmt.Errorf("%w: payload is not in canonical form", ErrMalformed)
	}
	t.Signer = env.Signer
	if t.Version != Version {
		return nil, fmt.Errorf("%w: %d, this node accepts %d", ErrUnsupportedVersion, t.Version, Version)
	}
	if err := t.validate(); err != nil {
		return nil, err
	}

	// Addressee.
	if t.Association != v.Association {
		return nil, fmt.Errorf("%w: ticket for %q, this node serves %q", ErrAssociationMismatch, t.Association, v.Association)
	}

	// Time.
	if err := t.checkLifetime(); err != nil {
		return nil, err
	}
	at := now()
	if at.Add(skew).Before(t.NotBefore) {
		return nil, fmt.Errorf("%w: nbf %s, now %s", ErrNotYetValid, t.NotBefore.Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	}
	if !at.Add(-skew).Before(t.Expires) {
		return nil, fmt.Errorf("%w: exp %s, now %s", ErrExpired, t.Expires.Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	}

	// The node's own catalog, then the signatures that approve the query.
	want, ok := v.Catalog(t.QueryID)
	if !ok {
		return nil, fmt.Errorf("%w: query %q is not in this node's catalog", ErrHashMismatch, t.QueryID)
	}
	if want != t.QueryHash {
		return nil, fmt.Errorf("%w: query %q has hash %s in the ticket, %s in this node's catalog", ErrHashMismatch, t.QueryID, t.QueryHash, want)
	}
	if !v.Verified.verify(v.CatalogKey, CatalogMessage(t.QueryID, t.QueryHash), t.CatalogSignature) {
		return nil, fmt.Errorf("%w: query %q", ErrBadCatalogSignature, t.QueryID)
	}
	msg := ApprovalMessage(t.StudyID, t.Association, t.QueryID, t.QueryHash, t.Params)
	if !t.Until.IsZero() {
		msg = StandingApprovalMessage(t.StudyID, t.Association, t.QueryID, t.QueryHash, t.Params, t.Until)
	}
	if !v.Verified.verify(v.AssociationKey, msg, t.Approval) {
		return nil, fmt.Errorf("%w: study %q, query %q, association %q", ErrBadApproval, t.StudyID, t.QueryID, t.Association)
	}
	if !t.Until.IsZero() && now().After(t.Until) {
		return nil, fmt.Errorf("%w: the standing approval of study %q held until %s", ErrApprovalExpired, t.StudyID, t.Until.UTC().Format(time.RFC3339))
	}

	// Policy.
	if err := v.Allowed(t.QueryID, t.QueryHash); err != nil {
		return nil, fmt.Errorf("%w: query %q: %w", ErrNotAllowed, t.QueryID, err)
	}

	// Nonce, last: only a ticket that passed everything else uses it up.
	fresh, err := v.Nonces.Remember(ctx, t.Nonce, t.Expires.Add(skew))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNonceStore, err)
	}
	if !fresh {
		return nil, fmt.Errorf("%w: nonce %s", ErrReplayed, hex.EncodeToString(t.Nonce))
	}
	return &t, nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields and nothing after it.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}
