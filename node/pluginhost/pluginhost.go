package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"

	"github.com/samsyn/samsyn/analysis"
)

// Handshake is the handshake every Samsyn analysis plugin answers.
var Handshake = analysis.Handshake

// Pin names an approved plugin binary by path and the hex SHA-256 of its content.
type Pin struct {
	Path   string
	SHA256 string
}

// ErrChecksum is returned when a plugin binary is not the approved build.
var ErrChecksum = errors.New("plugin binary does not match its pinned SHA-256")

// Verify checks the binary on disk against the pin, so a node refuses a changed plugin
// before anything is executed.
func (p Pin) Verify() error {
	got, err := FileSHA256(p.Path)
	if err != nil {
		return err
	}
	if got != p.SHA256 {
		return fmt.Errorf("%w: %s has %s, approved %s", ErrChecksum, filepath.Base(p.Path), short(got), short(p.SHA256))
	}
	return nil
}

func short(h string) string { return h[:min(12, len(h))] }

// FileSHA256 is the hex SHA-256 of a file's content.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open plugin: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read plugin %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ClientConfig is the go-plugin configuration for a pinned plugin: gRPC only, the binary's
// checksum checked by go-plugin right before it runs, and no environment inherited from the
// node. socketDir, when set, is a private (0700) folder for the plugin's socket, so no other
// user can connect to it; mutual TLS on the socket would add nothing against the only ones
// who can (the node's own user and root) and costs a key generation on both sides per call.
func ClientConfig(p Pin, plugins plugin.PluginSet, logger hclog.Logger, socketDir string) (*plugin.ClientConfig, error) {
	sum, err := hex.DecodeString(p.SHA256)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("plugin %s: sha256 %q: expected 64 hex characters", filepath.Base(p.Path), p.SHA256)
	}
	cmd := exec.Command(p.Path)
	cmd.Env = []string{}
	if socketDir != "" {
		cmd.Env = append(cmd.Env, plugin.EnvUnixSocketDir+"="+socketDir)
	}
	cmd.Dir = "/"
	return &plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          plugins,
		Cmd:              cmd,
		SecureConfig:     &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		SkipHostEnv:      true,
		Logger:           logger,
		StartTimeout:     10 * time.Second,
	}, nil
}

// Options bound every plugin call.
type Options struct {
	Timeout     time.Duration // the whole call, start to kill; 60 s when zero
	MemoryLimit uint64        // bytes of address space; 2 GiB when zero
	Logger      hclog.Logger
}

// ErrPlugin marks a failure of the plugin itself (start, crash, refusal, deadline), as
// opposed to the node's checks on its answer.
var ErrPlugin = errors.New("analysis plugin failed")

// Run starts the pinned plugin, streams rows to it, and returns its answer after checking
// it has exactly the shape req declares. The plugin is killed before Run returns.
func Run(ctx context.Context, pin Pin, opts Options, req *analysis.Request, rows array.RecordReader) (*analysis.Result, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.MemoryLimit == 0 {
		opts.MemoryLimit = 2 << 30
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	// go-plugin hashes the binary right before it runs it: a second check here would only
	// hash 20 MB again. A missing file is reported plainly.
	if _, err := os.Stat(pin.Path); err != nil {
		return nil, fmt.Errorf("open plugin: %w", err)
	}
	dir, err := os.MkdirTemp("", "samsyn-plugin-")
	if err != nil {
		return nil, fmt.Errorf("%w: socket folder: %v", ErrPlugin, err)
	}
	defer os.RemoveAll(dir)
	cfg, err := ClientConfig(pin, analysis.Plugins(nil), opts.Logger, dir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	client := plugin.NewClient(cfg)
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		if strings.Contains(err.Error(), "checksum") {
			return nil, fmt.Errorf("%w: %s is not the build the catalog pins", ErrChecksum, filepath.Base(pin.Path))
		}
		return nil, fmt.Errorf("%w: start %s: %v", ErrPlugin, filepath.Base(pin.Path), err)
	}
	if rc := client.ReattachConfig(); rc != nil && rc.Pid > 0 {
		lim := unix.Rlimit{Cur: opts.MemoryLimit, Max: opts.MemoryLimit}
		if err := unix.Prlimit(rc.Pid, unix.RLIMIT_AS, &lim, nil); err != nil {
			return nil, fmt.Errorf("%w: limit the memory of %s: %v", ErrPlugin, filepath.Base(pin.Path), err)
		}
	}
	raw, err := rpc.Dispense(analysis.PluginName)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPlugin, err)
	}
	c, ok := raw.(*analysis.Client)
	if !ok {
		return nil, fmt.Errorf("%w: the plugin is not an analysis", ErrPlugin)
	}
	done := make(chan struct{})
	go func() {
		// The deadline kills the process, not just the call.
		select {
		case <-ctx.Done():
			client.Kill()
		case <-done:
		}
	}()
	defer close(done)
	res, n, err := c.Run(ctx, req, rows)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s ran past its deadline of %s", ErrPlugin, filepath.Base(pin.Path), opts.Timeout)
		}
		return nil, fmt.Errorf("%w: %v", ErrPlugin, err)
	}
	if err := req.Check(res, n); err != nil {
		return nil, err
	}
	return res, nil
}
