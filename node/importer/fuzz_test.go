package importer

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var digits = regexp.MustCompile(`[0-9]{10,12}`)

// FuzzParticipantImport feeds hostile participant exports to the importer: never a panic;
// a refused import leaves the store exactly as it was; and no error quotes a personal
// identity number from the file.
func FuzzParticipantImport(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/participant*.csv")
	bad, _ := filepath.Glob("testdata/bad/*.csv")
	seeds = append(seeds, bad...)
	if len(seeds) < 5 {
		f.Fatalf("only %d seed files", len(seeds))
	}
	for _, p := range seeds {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		st := openStore(t)
		im := newImporter(st)
		before := state(t, st)
		p := filepath.Join(t.TempDir(), "participant.csv")
		if err := os.WriteFile(p, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := importFiles(t, im, "participant", p)
		if err == nil {
			return
		}
		if after := state(t, st); after != before {
			t.Fatal("a refused import changed the store")
		}
		var ve *ValidationError
		if !errors.As(err, &ve) {
			return
		}
		for _, pnr := range digits.FindAllString(string(raw), -1) {
			if strings.Contains(err.Error(), pnr) {
				t.Fatalf("the error quotes %q from the file: %v", pnr, err)
			}
		}
	})
}
