package queries

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// FuzzCatalogEntry feeds hostile YAML to the catalog loader: it must never panic, and an
// entry it accepts has a stable hash and an aggregate the node can generate.
func FuzzCatalogEntry(f *testing.F) {
	files, _ := filepath.Glob("catalog/*.yaml")
	if len(files) == 0 {
		f.Fatal("no catalog entries to seed from")
	}
	for _, p := range files {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte("id: x\nview: SELECT 1\n"))
	f.Add([]byte("id: [\n"))
	f.Add([]byte("id: q\nversion: 1\ntitle: {sv: a, en: b}\nview: \"SELECT p.participant_key FROM participant p; DROP TABLE participant\"\ndimensions: [gender]\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := ParseEntry("fuzz.yaml", raw)
		if err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			return
		}
		sum := sha256.Sum256(e.Canonical())
		if h := e.Hash(); h != hex.EncodeToString(sum[:]) {
			t.Fatalf("the hash %s of an accepted entry is not the SHA-256 of its canonical form", h)
		}
		if _, err := e.AggregateSQL(); err != nil {
			t.Fatalf("an accepted entry has no aggregate: %v", err)
		}
	})
}
