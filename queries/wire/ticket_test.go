package wire

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// key derives a deterministic ed25519 key from a name, so fuzz corpora stay valid across runs.
func key(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("samsyn wire test key: " + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

var (
	coordKey     = key("coordinator")
	strangerKey  = key("stranger")
	catalogKey   = key("catalog authority")
	rogueCatalog = key("rogue catalog")
	ostraKey     = key("association ostra-sodertorn")
	hbsKey       = key("association hbs")

	testNow   = time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC)
	queryID   = "exits_by_municipality"
	queryHash = hex.EncodeToString(func() []byte { s := sha256.Sum256([]byte("entry")); return s[:] }())
	otherHash = hex.EncodeToString(func() []byte { s := sha256.Sum256([]byte("other entry")); return s[:] }())
)

// goodTicket is a ticket the verifier from newVerifier accepts.
func goodTicket() Ticket {
	params := map[string]string{"from": "2021-01-01", "to": "2021-12-31"}
	return Ticket{
		Version:          Version,
		StudyID:          "st-0001",
		QueryID:          queryID,
		QueryHash:        queryHash,
		Params:           params,
		CatalogSignature: ed25519.Sign(catalogKey, CatalogMessage(queryID, queryHash)),
		Association:      "ostra-sodertorn",
		Approval:         ed25519.Sign(ostraKey, ApprovalMessage("st-0001", "ostra-sodertorn", queryID, queryHash, params)),
		Nonce:            bytes.Repeat([]byte{7}, NonceSize),
		NotBefore:        testNow.Add(-time.Minute),
		Expires:          testNow.Add(10 * time.Minute),
	}
}

func newVerifier(nonces NonceStore) Verifier {
	return Verifier{
		Coordinators:   map[string]ed25519.PublicKey{KeyID(pub(coordKey)): pub(coordKey)},
		CatalogKey:     pub(catalogKey),
		Association:    "ostra-sodertorn",
		AssociationKey: pub(ostraKey),
		Now:            func() time.Time { return testNow },
		Nonces:         nonces,
		Allowed:        func(string, string) error { return nil },
		Catalog: func(id string) (string, bool) {
			if id == queryID {
				return queryHash, true
			}
			return "", false
		},
	}
}

func mustSign(t testing.TB, tk Ticket, k ed25519.PrivateKey) []byte {
	t.Helper()
	raw, err := Sign(tk, k)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return raw
}

// signUnchecked signs any payload bytes, bypassing Sign's own checks, to build tickets Sign
// would refuse.
func signUnchecked(payload []byte, k ed25519.PrivateKey) []byte {
	raw, err := json.Marshal(envelope{Payload: payload, Signer: KeyID(pub(k)), Sig: ed25519.Sign(k, signedTicketMessage(payload))})
	if err != nil {
		panic(err)
	}
	return raw
}

func payloadOf(tk Ticket) []byte {
	p, err := json.Marshal(tk)
	if err != nil {
		panic(err)
	}
	return p
}

// editEnvelope decodes raw, lets f change it, and re-encodes it canonically.
func editEnvelope(t *testing.T, raw []byte, f func(*envelope)) []byte {
	t.Helper()
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	f(&env)
	out, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type failingNonces struct{}

func (failingNonces) Remember(context.Context, []byte, time.Time) (bool, error) {
	return false, errors.New("disk full")
}

func TestVerify(t *testing.T) {
	signed := func(f func(*Ticket)) func(*testing.T) []byte {
		return func(t *testing.T) []byte {
			tk := goodTicket()
			f(&tk)
			return mustSign(t, tk, coordKey)
		}
	}
	unchecked := func(f func(*Ticket)) func(*testing.T) []byte {
		return func(*testing.T) []byte {
			tk := goodTicket()
			f(&tk)
			return signUnchecked(payloadOf(tk), coordKey)
		}
	}
	good := func(t *testing.T) []byte { return mustSign(t, goodTicket(), coordKey) }

	tests := []struct {
		name     string
		raw      func(*testing.T) []byte
		verifier func(*Verifier)
		want     error
		reason   string
	}{
		{name: "good ticket verifies", raw: good},
		{name: "expired within the clock skew still verifies", raw: signed(func(tk *Ticket) {
			tk.NotBefore, tk.Expires = testNow.Add(-10*time.Minute), testNow.Add(-10*time.Second)
		})},
		{name: "not yet valid within the clock skew still verifies", raw: signed(func(tk *Ticket) {
			tk.NotBefore, tk.Expires = testNow.Add(20*time.Second), testNow.Add(10*time.Minute)
		})},
		{name: "flipped payload byte", want: ErrBadSignature, reason: "bad_signature", raw: func(t *testing.T) []byte {
			return editEnvelope(t, good(t), func(e *envelope) { e.Payload[10] ^= 1 })
		}},
		{name: "flipped signature byte", want: ErrBadSignature, reason: "bad_signature", raw: func(t *testing.T) []byte {
			return editEnvelope(t, good(t), func(e *envelope) { e.Sig[3] ^= 0x80 })
		}},
		{name: "truncated signature", want: ErrBadSignature, reason: "bad_signature", raw: func(t *testing.T) []byte {
			return editEnvelope(t, good(t), func(e *envelope) { e.Sig = e.Sig[:63] })
		}},
		{name: "known signer id with another key's signature", want: ErrBadSignature, reason: "bad_signature", raw: func(t *testing.T) []byte {
			return editEnvelope(t, mustSign(t, goodTicket(), strangerKey), func(e *envelope) { e.Signer = KeyID(pub(coordKey)) })
		}},
		{name: "unknown signer key", want: ErrUnknownSigner, reason: "unknown_signer", raw: func(t *testing.T) []byte {
			return mustSign(t, goodTicket(), strangerKey)
		}},
		{name: "not JSON", want: ErrMalformed, reason: "malformed", raw: func(*testing.T) []byte { return []byte("ticket please") }},
		{name: "envelope not canonical", want: ErrMalformed, reason: "malformed", raw: func(t *testing.T) []byte {
			return append(good(t), ' ')
		}},
		{name: "unknown envelope field", want: ErrMalformed, reason: "malformed", raw: func(t *testing.T) []byte {
			r := good(t)
			return append(r[:len(r)-1], []byte(`,"x":1}`)...)
		}},
		{name: "too large", want: ErrMalformed, reason: "malformed", raw: func(t *testing.T) []byte {
			return unchecked(func(tk *Ticket) { tk.Params["pad"] = strings.Repeat("x", MaxTicketSize) })(t)
		}},
		{name: "unknown payload field", want: ErrMalformed, reason: "malformed", raw: func(*testing.T) []byte {
			p := payloadOf(goodTicket())
			p = append(p[:len(p)-1], []byte(`,"extra":"x"}`)...)
			return signUnchecked(p, coordKey)
		}},
		{name: "payload not canonical", want: ErrMalformed, reason: "malformed", raw: func(*testing.T) []byte {
			return signUnchecked(append([]byte(" "), payloadOf(goodTicket())...), coordKey)
		}},
		{name: "payload field name in another case", want: ErrMalformed, reason: "malformed", raw: func(*testing.T) []byte {
			p := bytes.Replace(payloadOf(goodTicket()), []byte(`"study"`), []byte(`"STUDY"`), 1)
			return signUnchecked(p, coordKey)
		}},
		{name: "short nonce", want: ErrMalformed, reason: "malformed", raw: unchecked(func(tk *Ticket) { tk.Nonce = tk.Nonce[:15] })},
		{name: "uppercase query hash", want: ErrMalformed, reason: "malformed", raw: unchecked(func(tk *Ticket) { tk.QueryHash = strings.ToUpper(tk.QueryHash) })},
		{name: "version 2", want: ErrUnsupportedVersion, reason: "unsupported_version", raw: unchecked(func(tk *Ticket) { tk.Version = 2 })},
		{name: "wrong association", want: ErrAssociationMismatch, reason: "association_mismatch", raw: signed(func(tk *Ticket) {
			tk.Association = "hbs"
			tk.Approval = ed25519.Sign(hbsKey, ApprovalMessage(tk.StudyID, "hbs", tk.QueryID, tk.QueryHash, tk.Params))
		})},
		{name: "expired", want: ErrExpired, reason: "expired", raw: signed(func(tk *Ticket) {
			tk.NotBefore, tk.Expires = testNow.Add(-20*time.Minute), testNow.Add(-5*time.Minute)
		})},
		{name: "not yet valid", want: ErrNotYetValid, reason: "not_yet_valid", raw: signed(func(tk *Ticket) {
			tk.NotBefore, tk.Expires = testNow.Add(5*time.Minute), testNow.Add(10*time.Minute)
		})},
		{name: "lifetime of 16 minutes", want: ErrLifetime, reason: "lifetime", raw: unchecked(func(tk *Ticket) {
			tk.NotBefore, tk.Expires = testNow.Add(-time.Minute), testNow.Add(15*time.Minute)
		})},
		{name: "expires before it begins", want: ErrLifetime, reason: "lifetime", raw: unchecked(func(tk *Ticket) {
			tk.NotBefore, tk.Expires = testNow, testNow.Add(-time.Second)
		})},
		{name: "catalog hash mismatch", want: ErrHashMismatch, reason: "hash_mismatch", raw: signed(func(tk *Ticket) {
			tk.QueryHash = otherHash
			tk.CatalogSignature = ed25519.Sign(catalogKey, CatalogMessage(tk.QueryID, otherHash))
			tk.Approval = ed25519.Sign(ostraKey, ApprovalMessage(tk.StudyID, tk.Association, tk.QueryID, otherHash, tk.Params))
		})},
		{name: "query not in the node's catalog", want: ErrHashMismatch, reason: "hash_mismatch", raw: signed(func(tk *Ticket) {
			tk.QueryID = "drop_table"
			tk.CatalogSignature = ed25519.Sign(catalogKey, CatalogMessage("drop_table", tk.QueryHash))
		})},
		{name: "catalog signature by the wrong key", want: ErrBadCatalogSignature, reason: "bad_catalog_signature", raw: signed(func(tk *Ticket) {
			tk.CatalogSignature = ed25519.Sign(rogueCatalog, CatalogMessage(tk.QueryID, tk.QueryHash))
		})},
		{name: "approval by another association's key", want: ErrBadApproval, reason: "bad_approval", raw: signed(func(tk *Ticket) {
			tk.Approval = ed25519.Sign(hbsKey, ApprovalMessage(tk.StudyID, tk.Association, tk.QueryID, tk.QueryHash, tk.Params))
		})},
		{name: "approval for different params", want: ErrBadApproval, reason: "bad_approval", raw: signed(func(tk *Ticket) {
			tk.Params = map[string]string{"from": "2020-01-01", "to": "2021-12-31"}
		})},
		{name: "approval for another study", want: ErrBadApproval, reason: "bad_approval", raw: signed(func(tk *Ticket) {
			tk.StudyID = "st-0002"
		})},
		{name: "policy refusal", want: ErrNotAllowed, reason: "not_allowed", raw: good, verifier: func(v *Verifier) {
			v.Allowed = func(string, string) error { return errors.New("query disabled by node policy") }
		}},
		{name: "nonce store failure", want: ErrNonceStore, reason: "nonce_store", raw: good, verifier: func(v *Verifier) {
			v.Nonces = failingNonces{}
		}},
		{name: "verifier without a nonce store", want: ErrVerifierConfig, reason: "misconfigured", raw: good, verifier: func(v *Verifier) {
			v.Nonces = nil
		}},
		{name: "verifier without a policy", want: ErrVerifierConfig, reason: "misconfigured", raw: good, verifier: func(v *Verifier) {
			v.Allowed = nil
		}},
		{name: "verifier without an association key", want: ErrVerifierConfig, reason: "misconfigured", raw: good, verifier: func(v *Verifier) {
			v.AssociationKey = nil
		}},
	}
	// Every case also runs with a signature cache that already holds the good ticket's
	// catalog and approval signatures: what was remembered must never let a bad one through.
	warm := NewSignatureCache()
	wv := newVerifier(NewMemoryNonces(0))
	wv.Verified = warm
	if _, err := Verify(context.Background(), good(t), wv); err != nil {
		t.Fatal(err)
	}
	if len(warm.ok) != 2 {
		t.Fatalf("the cache holds %d signatures after one ticket, want 2 (catalog, approval)", len(warm.ok))
	}
	for _, cache := range []*SignatureCache{nil, warm} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/cache=%t", tc.name, cache != nil), func(t *testing.T) {
				nonces := NewMemoryNonces(0)
				v := newVerifier(nonces)
				v.Verified = cache
				if tc.verifier != nil {
					tc.verifier(&v)
				}
				got, err := Verify(context.Background(), tc.raw(t), v)
				if tc.want == nil {
					if err != nil {
						t.Fatalf("Verify: %v", err)
					}
					if got.Signer != KeyID(pub(coordKey)) || got.QueryID != queryID {
						t.Fatalf("verified ticket: signer %q query %q", got.Signer, got.QueryID)
					}
					if nonces.Len() != 1 {
						t.Fatalf("accepted ticket left %d nonces, want 1", nonces.Len())
					}
					return
				}
				if !errors.Is(err, tc.want) {
					t.Fatalf("Verify error = %v, want %v", err, tc.want)
				}
				if got != nil {
					t.Fatal("Verify returned a ticket with an error")
				}
				if r := Reason(err); r != tc.reason {
					t.Fatalf("Reason = %q, want %q", r, tc.reason)
				}
				if nonces.Len() != 0 {
					t.Fatalf("refused ticket used up its nonce")
				}
			})
		}
	}
	if len(warm.ok) != 2 {
		t.Fatalf("the cache holds %d signatures after the refusals, want still 2", len(warm.ok))
	}
}

func TestVerifyReplay(t *testing.T) {
	v := newVerifier(NewMemoryNonces(0))
	raw := mustSign(t, goodTicket(), coordKey)
	if _, err := Verify(context.Background(), raw, v); err != nil {
		t.Fatalf("first use: %v", err)
	}
	_, err := Verify(context.Background(), raw, v)
	if !errors.Is(err, ErrReplayed) || Reason(err) != "replayed" {
		t.Fatalf("second use: %v (reason %q), want replayed", err, Reason(err))
	}
	// A different ticket with the same nonce is a replay too.
	tk := goodTicket()
	tk.Expires = tk.Expires.Add(time.Minute)
	if _, err := Verify(context.Background(), mustSign(t, tk, coordKey), v); !errors.Is(err, ErrReplayed) {
		t.Fatalf("same nonce, new ticket: %v, want replayed", err)
	}
}

func TestRefusedTicketKeepsItsNonce(t *testing.T) {
	nonces := NewMemoryNonces(0)
	v := newVerifier(nonces)
	raw := mustSign(t, goodTicket(), coordKey)
	v.Allowed = func(string, string) error { return errors.New("not today") }
	if _, err := Verify(context.Background(), raw, v); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("refusal: %v", err)
	}
	v.Allowed = func(string, string) error { return nil }
	if _, err := Verify(context.Background(), raw, v); err != nil {
		t.Fatalf("after the policy allows it, the same ticket must verify: %v", err)
	}
}

func TestSignRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Ticket)
		want error
	}{
		{"lifetime of 16 minutes", func(tk *Ticket) { tk.Expires = tk.NotBefore.Add(16 * time.Minute) }, ErrLifetime},
		{"nonce of 15 bytes", func(tk *Ticket) { tk.Nonce = make([]byte, 15) }, ErrMalformed},
		{"no nonce", func(tk *Ticket) { tk.Nonce = nil }, ErrMalformed},
		{"version 2", func(tk *Ticket) { tk.Version = 2 }, ErrUnsupportedVersion},
		{"no study", func(tk *Ticket) { tk.StudyID = "" }, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tk := goodTicket()
			tc.edit(&tk)
			if _, err := Sign(tk, coordKey); !errors.Is(err, tc.want) {
				t.Fatalf("Sign error = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Sign(goodTicket(), ed25519.PrivateKey("short")); err == nil {
		t.Fatal("Sign accepted a bad key")
	}
}

func TestSignWritesZeroVersionAsCurrent(t *testing.T) {
	tk := goodTicket()
	tk.Version = 0
	got, err := Verify(context.Background(), mustSign(t, tk, coordKey), newVerifier(NewMemoryNonces(0)))
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != Version {
		t.Fatalf("version %d", got.Version)
	}
}

func TestKeyID(t *testing.T) {
	id := KeyID(pub(coordKey))
	if len(id) != 16 {
		t.Fatalf("KeyID %q: want 16 hex characters", id)
	}
	if _, err := hex.DecodeString(id); err != nil {
		t.Fatalf("KeyID %q: %v", id, err)
	}
	if id == KeyID(pub(strangerKey)) {
		t.Fatal("two keys share an id")
	}
}

func TestApprovalMessageIsUnambiguous(t *testing.T) {
	msgs := map[string][]byte{
		"base":            ApprovalMessage("s", "a", "q", queryHash, map[string]string{"from": "2021", "to": "2022"}),
		"shifted fields":  ApprovalMessage("s,a", "", "q", queryHash, map[string]string{"from": "2021", "to": "2022"}),
		"shifted params":  ApprovalMessage("s", "a", "q", queryHash, map[string]string{"from": "2021to", "": "2022"}),
		"fewer params":    ApprovalMessage("s", "a", "q", queryHash, map[string]string{"from": "2021"}),
		"no params":       ApprovalMessage("s", "a", "q", queryHash, nil),
		"another study":   ApprovalMessage("t", "a", "q", queryHash, map[string]string{"from": "2021", "to": "2022"}),
		"swapped values":  ApprovalMessage("s", "a", "q", queryHash, map[string]string{"from": "2022", "to": "2021"}),
		"value in a name": ApprovalMessage("s", "a", "q", queryHash, map[string]string{"from:2021": "", "to": "2022"}),
	}
	seen := map[string]string{}
	for name, m := range msgs {
		if !bytes.HasPrefix(m, []byte("samsyn/approval/v1\n")) {
			t.Fatalf("%s: no domain prefix", name)
		}
		if other, ok := seen[string(m)]; ok {
			t.Fatalf("%s and %s encode the same message", name, other)
		}
		seen[string(m)] = name
	}
	a := ApprovalMessage("s", "a", "q", queryHash, map[string]string{"to": "2022", "from": "2021"})
	if !bytes.Equal(a, msgs["base"]) {
		t.Fatal("parameter order changed the message")
	}
}

func TestCatalogMessage(t *testing.T) {
	if got, want := string(CatalogMessage("q", "abc")), "samsyn/catalog/v1\nq\nabc"; got != want {
		t.Fatalf("CatalogMessage = %q, want %q", got, want)
	}
}

func TestReason(t *testing.T) {
	if Reason(nil) != "" {
		t.Fatal("Reason(nil)")
	}
	if Reason(errors.New("x")) != "error" {
		t.Fatal("Reason of a foreign error")
	}
	codes := map[string]bool{}
	for _, r := range reasons {
		if codes[r.code] {
			t.Fatalf("code %q used twice", r.code)
		}
		codes[r.code] = true
		if got := Reason(errors.Join(errors.New("detail"), r.err)); got != r.code {
			t.Fatalf("Reason(%v) = %q, want %q", r.err, got, r.code)
		}
	}
}

func FuzzVerify(f *testing.F) {
	good, err := Sign(goodTicket(), coordKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte(`{"payload":"","signer":"","sig":""}`))
	f.Add(bytes.Replace(good, []byte(`"sig":"`), []byte(`"sig":"A`), 1))
	var env envelope
	if err := json.Unmarshal(good, &env); err != nil {
		f.Fatal(err)
	}
	f.Add(env.Payload)
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := Verify(context.Background(), raw, newVerifier(NewMemoryNonces(0)))
		if err == nil && !bytes.Equal(raw, good) {
			t.Fatalf("accepted a mutated ticket: %q -> %+v", raw, got)
		}
		if err != nil && Reason(err) == "error" {
			t.Fatalf("error without a reason code: %v", err)
		}
	})
}

func TestStandingApprovalsHoldUntilTheirDateOnly(t *testing.T) {
	ctx := context.Background()
	until := testNow.Add(30 * 24 * time.Hour)
	standing := func(run int, until time.Time, signedUntil time.Time) Ticket {
		tk := goodTicket()
		tk.Run, tk.Until = run, until
		tk.Approval = ed25519.Sign(ostraKey, StandingApprovalMessage(tk.StudyID, tk.Association, tk.QueryID, tk.QueryHash, tk.Params, signedUntil))
		tk.Nonce = bytes.Repeat([]byte{byte(run + 1)}, NonceSize)
		return tk
	}
	v := newVerifier(NewMemoryNonces(16))
	for run := 0; run < 3; run++ {
		if _, err := Verify(ctx, mustSign(t, standing(run, until, until), coordKey), v); err != nil {
			t.Fatalf("run %d of a standing study: %v", run, err)
		}
	}
	// The coordinator cannot stretch the approval: the date is under the signature.
	if _, err := Verify(ctx, mustSign(t, standing(3, until.Add(365*24*time.Hour), until), coordKey), v); !errors.Is(err, ErrBadApproval) {
		t.Fatalf("a later date than the one signed: %v", err)
	}
	// A one-off approval does not stand for reruns.
	tk := goodTicket()
	tk.Run, tk.Until, tk.Nonce = 4, until, bytes.Repeat([]byte{9}, NonceSize)
	if _, err := Verify(ctx, mustSign(t, tk, coordKey), v); !errors.Is(err, ErrBadApproval) {
		t.Fatalf("a one-off approval used for a rerun: %v", err)
	}
	// After the date, nothing.
	late := v
	late.Now = func() time.Time { return until.Add(time.Minute) }
	old := standing(5, until, until)
	old.NotBefore, old.Expires = until, until.Add(5*time.Minute)
	if _, err := Verify(ctx, mustSign(t, old, coordKey), late); !errors.Is(err, ErrApprovalExpired) || Reason(err) != "approval_expired" {
		t.Fatalf("a run after the standing approval ended: %v (%s)", err, Reason(err))
	}
	// A rerun needs a standing approval.
	bad := goodTicket()
	bad.Run, bad.Nonce = 1, bytes.Repeat([]byte{11}, NonceSize)
	if _, err := Verify(ctx, signUnchecked(payloadOf(bad), coordKey), v); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a run without a standing approval: %v", err)
	}
}
