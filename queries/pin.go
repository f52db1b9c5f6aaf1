package queries

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
)

var sha256Line = regexp.MustCompile(`(?m)^(\s+sha256:).*$`)

// Pin sets each analysis entry's plugin hash to that of its binary in pluginDir, in memory
// and, with writeFiles, in the entry's file, so the catalog authority signs exactly the
// builds the nodes will run. It returns the entries pinned.
func (c *Catalog) Pin(pluginDir string, writeFiles bool) ([]string, error) {
	var pinned []string
	for _, id := range c.IDs() {
		e := c.Entries[id]
		if e.Analysis == nil {
			continue
		}
		bin := filepath.Join(pluginDir, e.Analysis.Plugin)
		sum, err := fileSHA256(bin)
		if err != nil {
			return pinned, fmt.Errorf("%s: plugin %s: %w (build it with `make build`)", id, e.Analysis.Plugin, err)
		}
		e.Analysis.SHA256 = sum
		if writeFiles && e.file != "" {
			raw, err := os.ReadFile(e.file)
			if err != nil {
				return pinned, err
			}
			if !sha256Line.Match(raw) {
				return pinned, fmt.Errorf("%s: no sha256 line under analysis to pin", e.file)
			}
			out := sha256Line.ReplaceAll(raw, []byte("${1} "+sum))
			if err := os.WriteFile(e.file, out, 0o644); err != nil {
				return pinned, err
			}
		}
		pinned = append(pinned, id)
	}
	return pinned, nil
}

// Unpinned lists the analysis entries without a plugin hash.
func (c *Catalog) Unpinned() []string {
	var out []string
	for _, id := range c.IDs() {
		if a := c.Entries[id].Analysis; a != nil && a.SHA256 == "" {
			out = append(out, id)
		}
	}
	return out
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
