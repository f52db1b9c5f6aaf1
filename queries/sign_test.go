package queries

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func copyCatalog(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files, _ := filepath.Glob("catalog/*.yaml")
	if len(files) == 0 {
		t.Fatal("no catalog entries found")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSignedCatalogLoadsOnlyWhileUnchanged(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	otherPub, _, _ := ed25519.GenerateKey(nil)
	dir := copyCatalog(t)
	c, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSignatures(dir, Sign(c, key, time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadSigned(dir, pub); err != nil {
		t.Fatalf("signed catalog refused: %v", err)
	}
	if _, _, err := LoadSigned(dir, otherPub); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("another authority's key accepted: %v", err)
	}
	path := filepath.Join(dir, "outcome_by_method.yaml")
	raw, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(raw), "e.method, e.outcome", "e.method, e.outcome, p.gender", 1)), 0o644)
	if _, _, err := LoadSigned(dir, pub); !errors.Is(err, ErrUnsigned) || !strings.Contains(err.Error(), "outcome_by_method has changed") {
		t.Fatalf("a changed entry was accepted: %v", err)
	}
	os.WriteFile(path, raw, 0o644)
	extra := filepath.Join(dir, "exits_by_association.yaml")
	raw2, _ := os.ReadFile(extra)
	os.WriteFile(filepath.Join(dir, "exits_copy.yaml"), []byte(strings.Replace(string(raw2), "id: exits_by_association", "id: exits_copy", 1)), 0o644)
	if _, _, err := LoadSigned(dir, pub); !errors.Is(err, ErrUnsigned) || !strings.Contains(err.Error(), "exits_copy has no signature") {
		t.Fatalf("an unsigned entry was accepted: %v", err)
	}
}
