package nodetest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	pluginsOnce sync.Once
	pluginsDir  string
	pluginsErr  error
)

// Plugins builds the analysis plugins (cmd/samsyn-analysis-*) once per test binary, as
// `make build` does, and returns their folder.
func Plugins(t testing.TB) string {
	t.Helper()
	pluginsOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "samsyn-plugins-")
		if err != nil {
			pluginsErr = err
			return
		}
		for _, p := range []string{"km", "logit", "pathways"} {
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "samsyn-analysis-"+p), "./cmd/samsyn-analysis-"+p)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				pluginsErr = errors.New("build plugin " + p + ": " + string(out))
				return
			}
		}
		pluginsDir = dir
	})
	if pluginsErr != nil {
		t.Fatal(pluginsErr)
	}
	return pluginsDir
}
