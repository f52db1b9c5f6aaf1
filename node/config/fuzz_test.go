package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzNodeConfig: any node.yaml either loads or fails with an error that names the file;
// never a panic.
func FuzzNodeConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	if len(files) == 0 {
		f.Fatal("no example configs to seed from")
	}
	for _, p := range files {
		raw, _ := os.ReadFile(p)
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		path := filepath.Join(t.TempDir(), "node.yaml")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Fatalf("the error does not name the file: %v", err)
		}
	})
}
