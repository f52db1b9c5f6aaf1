package pluginhost

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// Handshake is the handshake every Samsyn analysis plugin answers. The cookie is not a
// secret: it only keeps a plugin binary from being run by mistake as a program of its own.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "SAMSYN_ANALYSIS_PLUGIN",
	MagicCookieValue: "samsyn-node-analysis-v1",
}

// Pin names an approved plugin binary by path and the hex SHA-256 of its content.
type Pin struct {
	Path   string
	SHA256 string
}

// ErrChecksum is returned when a plugin binary is not the approved build.
var ErrChecksum = errors.New("plugin binary does not match its pinned SHA-256")

// Verify checks the binary on disk against the pin, so a node refuses a changed plugin at
// start, before anything is executed.
func (p Pin) Verify() error {
	f, err := os.Open(p.Path)
	if err != nil {
		return fmt.Errorf("open plugin %s: %w", p.Path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("read plugin %s: %w", p.Path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.SHA256 {
		return fmt.Errorf("%w: %s has %s, approved %s", ErrChecksum, p.Path, got, p.SHA256)
	}
	return nil
}

// ClientConfig is the go-plugin configuration for a pinned plugin: gRPC only, the binary's
// checksum checked again by go-plugin right before it runs, and no environment passed on
// beyond what go-plugin itself sets.
func ClientConfig(p Pin, plugins plugin.PluginSet, logger hclog.Logger) (*plugin.ClientConfig, error) {
	sum, err := hex.DecodeString(p.SHA256)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("plugin %s: sha256 %q: expected 64 hex characters", p.Path, p.SHA256)
	}
	cmd := exec.Command(p.Path)
	cmd.Env = []string{}
	return &plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          plugins,
		Cmd:              cmd,
		SecureConfig:     &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
	}, nil
}
