package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzCoordinatorConfig: any coordinator.yaml either loads or fails with an error that names
// the file; never a panic.
func FuzzCoordinatorConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	if len(files) == 0 {
		f.Fatal("no example configs to seed from")
	}
	for _, p := range files {
		raw, _ := os.ReadFile(p)
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		dir := t.TempDir()
		tokens, _ := os.ReadFile("testdata/tokens.yaml")
		os.WriteFile(filepath.Join(dir, "tokens.yaml"), tokens, 0o600)
		path := filepath.Join(dir, "coordinator.yaml")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if err != nil && !strings.Contains(err.Error(), path) && !strings.Contains(err.Error(), "tokens") {
			t.Fatalf("the error does not name the file: %v", err)
		}
	})
}
