package pluginhost

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

func TestAChangedPluginIsRefusedBeforeItRuns(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "analysis")
	marker := filepath.Join(dir, "ran")
	os.WriteFile(bin, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755)
	sum := sha256.Sum256([]byte("#!/bin/sh\necho the approved build\n"))
	pin := Pin{Path: bin, SHA256: hex.EncodeToString(sum[:])}
	if err := pin.Verify(); !errors.Is(err, ErrChecksum) {
		t.Fatalf("Verify: %v", err)
	}
	cfg, err := ClientConfig(pin, plugin.PluginSet{}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	client := plugin.NewClient(cfg)
	defer client.Kill()
	if _, err := client.Start(); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("go-plugin started a changed binary: %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the changed plugin ran")
	}
	good, _ := os.ReadFile(bin)
	sum = sha256.Sum256(good)
	if err := (Pin{Path: bin, SHA256: hex.EncodeToString(sum[:])}).Verify(); err != nil {
		t.Fatalf("the approved build was refused: %v", err)
	}
	if _, err := ClientConfig(Pin{Path: bin, SHA256: "zz"}, nil, nil); err == nil {
		t.Fatal("a malformed pin was accepted")
	}
}
