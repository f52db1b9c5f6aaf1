package queries

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/samsyn/samsyn/queries/wire"
)

// SignaturesFile is the file in a catalog folder that holds the catalog authority's
// signatures over every entry's hash.
const SignaturesFile = "signatures.json"

// Signatures is the content of SignaturesFile.
type Signatures struct {
	Authority string                    `json:"authority"` // key id of the catalog authority
	SignedAt  time.Time                 `json:"signed_at"`
	Entries   map[string]EntrySignature `json:"entries"`
}

// EntrySignature signs one entry's hash.
type EntrySignature struct {
	Hash string `json:"hash"`
	Sig  []byte `json:"sig"`
}

// Sign signs every entry of c with the catalog authority's key.
func Sign(c *Catalog, key ed25519.PrivateKey, now time.Time) Signatures {
	s := Signatures{Authority: wire.KeyID(key.Public().(ed25519.PublicKey)), SignedAt: now.UTC(), Entries: map[string]EntrySignature{}}
	for _, id := range c.IDs() {
		h := c.Entries[id].Hash()
		s.Entries[id] = EntrySignature{Hash: h, Sig: ed25519.Sign(key, wire.CatalogMessage(id, h))}
	}
	return s
}

// WriteSignatures writes SignaturesFile into dir.
func WriteSignatures(dir string, s Signatures) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, SignaturesFile), append(b, '\n'), 0o644)
}

// ErrUnsigned is returned for a catalog entry without a valid signature.
var ErrUnsigned = errors.New("catalog entry is not signed by the catalog authority")

// Verify checks that every entry of c is signed by pub over its current hash, and that the
// signatures name no entry c lacks.
func Verify(c *Catalog, s Signatures, pub ed25519.PublicKey) error {
	if s.Authority != wire.KeyID(pub) {
		return fmt.Errorf("%w: signed by key %s, expected %s", ErrUnsigned, s.Authority, wire.KeyID(pub))
	}
	for _, id := range c.IDs() {
		sig, ok := s.Entries[id]
		switch {
		case !ok:
			return fmt.Errorf("%w: %s has no signature", ErrUnsigned, id)
		case sig.Hash != c.Entries[id].Hash():
			return fmt.Errorf("%w: %s has changed since it was signed (hash %s, signed %s)", ErrUnsigned, id, c.Entries[id].Hash()[:12], sig.Hash[:min(12, len(sig.Hash))])
		case !ed25519.Verify(pub, wire.CatalogMessage(id, sig.Hash), sig.Sig):
			return fmt.Errorf("%w: %s has a bad signature", ErrUnsigned, id)
		}
	}
	for id := range s.Entries {
		if _, ok := c.Entries[id]; !ok {
			return fmt.Errorf("%w: the signatures name %s, which is not in the catalog", ErrUnsigned, id)
		}
	}
	return nil
}

// ReadSignatures reads SignaturesFile from dir.
func ReadSignatures(dir string) (Signatures, error) {
	var s Signatures
	raw, err := os.ReadFile(filepath.Join(dir, SignaturesFile))
	if err != nil {
		return s, fmt.Errorf("read catalog signatures: %w", err)
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, fmt.Errorf("%s: %w", filepath.Join(dir, SignaturesFile), err)
	}
	return s, nil
}

// LoadSigned loads dir and refuses it unless every entry is signed by pub.
func LoadSigned(dir string, pub ed25519.PublicKey) (*Catalog, Signatures, error) {
	c, err := LoadDir(dir)
	if err != nil {
		return nil, Signatures{}, err
	}
	s, err := ReadSignatures(dir)
	if err != nil {
		return nil, s, err
	}
	if err := Verify(c, s, pub); err != nil {
		return nil, s, fmt.Errorf("catalog %s: %w", dir, err)
	}
	return c, s, nil
}

// Signature returns the catalog signature of entry id.
func (s Signatures) Signature(id string) []byte { return s.Entries[id].Sig }
