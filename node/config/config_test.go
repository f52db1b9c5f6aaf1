package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadGoodFiles(t *testing.T) {
	for _, path := range []string{"testdata/minimal.good.yaml", "testdata/defaults.good.yaml"} {
		c, err := Load(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !filepath.IsAbs(c.StorePath()) || filepath.Base(c.StorePath()) != "store.duckdb" || filepath.Base(c.SecretPath()) != "secret" {
			t.Errorf("%s: paths %s %s", path, c.StorePath(), c.SecretPath())
		}
	}
}

func TestLoadBadFilesNamesFileLineAndField(t *testing.T) {
	want := map[string]string{
		"unknown_key.bad.yaml":         "testdata/unknown_key.bad.yaml:2: field colour not found",
		"wrong_type.bad.yaml":          "testdata/wrong_type.bad.yaml:2: cannot unmarshal !!seq into string",
		"missing_association.bad.yaml": "testdata/missing_association.bad.yaml: association: missing: expected one of ostra-sodertorn, hbs,",
		"unknown_association.bad.yaml": `testdata/unknown_association.bad.yaml:2: association: unknown association "lidingo": expected one of`,
		"empty.bad.yaml":               "testdata/empty.bad.yaml: file is empty",
		"broken.bad.yaml":              "testdata/broken.bad.yaml:2: mapping values are not allowed in this context",
		"looser_policy.bad.yaml":       "testdata/looser_policy.bad.yaml:2: policy: disclosure policy is looser than the federation's defaults: threshold 3 < 5",
		"bad_duration.bad.yaml":        "testdata/bad_duration.bad.yaml:2: cannot unmarshal !!str `forever` into time.Duration",
		"negative_threads.bad.yaml":    "testdata/negative_threads.bad.yaml:2: query: threads -2: expected 0 (every core) to 256",
	}
	files, _ := filepath.Glob("testdata/*.bad.yaml")
	if len(files) != len(want) {
		t.Fatalf("%d bad files, %d expectations", len(files), len(want))
	}
	for _, path := range files {
		_, err := Load(path)
		if err == nil {
			t.Errorf("%s: accepted", path)
			continue
		}
		if w := want[filepath.Base(path)]; !strings.HasPrefix(err.Error(), w) {
			t.Errorf("%s:\n got %s\nwant %s…", path, err, w)
		}
	}
}

func TestScaffoldCreatesAPrivateSecretAndRefusesToOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	c, err := Scaffold(dir, "roslagen")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(c.SecretPath())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret mode %v %v", fi.Mode(), err)
	}
	s1, err := c.ReadSecret()
	if err != nil || len(s1) != SecretLen {
		t.Fatalf("secret: %d bytes %v", len(s1), err)
	}
	if _, err := Scaffold(dir, "roslagen"); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second scaffold: %v", err)
	}
	other, err := Scaffold(filepath.Join(t.TempDir(), "n2"), "roslagen")
	if err != nil {
		t.Fatal(err)
	}
	if s2, _ := other.ReadSecret(); string(s2) == string(s1) {
		t.Fatal("two nodes got the same secret")
	}
	if _, err := Scaffold(t.TempDir(), "atlantis"); err == nil || !strings.Contains(err.Error(), "hbs") {
		t.Fatalf("unknown association: %v", err)
	}
}

func TestReadSecretRefusesReadableFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	os.WriteFile(path, []byte(strings.Repeat("ab", SecretLen)), 0o644)
	_, err := ReadSecret(path)
	if err == nil || !strings.Contains(err.Error(), "0644") || strings.Contains(err.Error(), "abab") {
		t.Fatalf("readable secret: %v", err)
	}
	os.Chmod(path, 0o600)
	if _, err := ReadSecret(path); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := ReadSecret(path); err == nil || strings.Contains(err.Error(), "short") {
		t.Fatalf("short secret: %v", err)
	}
}

func TestServeConfig(t *testing.T) {
	c, err := Load("testdata/serve.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateServe(); err != nil {
		t.Fatal(err)
	}
	if p := c.EffectivePolicy(); p.Threshold != 10 || p.MeanMinN != 10 {
		t.Fatalf("policy %+v", p)
	}
	if c.Query.Timeout.Seconds() != 20 || !filepath.IsAbs(c.Abs(c.TLS.Key)) {
		t.Fatalf("query %+v key %s", c.Query, c.Abs(c.TLS.Key))
	}
	c.HealthListen = "0.0.0.0:9100"
	if err := c.ValidateServe(); err == nil || !strings.Contains(err.Error(), "health_listen") || !strings.Contains(err.Error(), "serve.good.yaml:3") {
		t.Fatalf("public plain HTTP accepted: %v", err)
	}
	minimal, _ := Load("testdata/minimal.good.yaml")
	if err := minimal.ValidateServe(); err == nil || !strings.Contains(err.Error(), "listen: missing") {
		t.Fatalf("serve without listen: %v", err)
	}
	// A node that dials out needs no listen; a malformed dial address is named.
	c.HealthListen = "127.0.0.1:9100"
	c.Listen, c.Coordinator.Dial = "", "coordinator.example:7443"
	if err := c.ValidateServe(); err != nil {
		t.Fatalf("dial-out node without listen: %v", err)
	}
	c.Coordinator.Dial = "coordinator.example"
	if err := c.ValidateServe(); err == nil || !strings.Contains(err.Error(), "coordinator.dial") {
		t.Fatalf("bad dial address: %v", err)
	}
}
