package queries

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

//go:embed catalog/*.yaml
var embedded embed.FS

// WriteEmbedded writes the catalog shipped in the binary into dir (created if needed), so a
// deployment can review and sign exactly what it will run.
func WriteEmbedded(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files, err := fs.Glob(embedded, "catalog/*.yaml")
	if err != nil {
		return err
	}
	for _, f := range files {
		raw, err := embedded.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), raw, 0o644); err != nil {
			return fmt.Errorf("write catalog: %w", err)
		}
	}
	return nil
}
