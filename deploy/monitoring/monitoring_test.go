package monitoring

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var metricName = regexp.MustCompile(`samsyn_[a-z0-9_]+`)

// exported lists the metric names the daemons register, read from their sources.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	decl := regexp.MustCompile(`Name:\s*"(samsyn_[a-z0-9_]+)"`)
	err := filepath.WalkDir("../..", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllSubmatch(raw, -1) {
			out[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 10 {
		t.Fatalf("only %d metrics found in the sources", len(out))
	}
	return out
}

func used(t *testing.T, file string) []string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range metricName.FindAllString(string(raw), -1) {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(m, "_seconds"+suffix) {
				m = strings.TrimSuffix(m, suffix)
			}
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		t.Fatalf("%s uses no samsyn metric", file)
	}
	return out
}

func TestRulesAndDashboardUseOnlyExportedMetrics(t *testing.T) {
	have := exported(t)
	// Regular expressions over a family name ("samsyn_(node|coordinator)_...") are checked by
	// their expansions.
	expand := strings.NewReplacer("samsyn_(node|coordinator)_", "samsyn_node_")
	for _, file := range []string{"alerts.yml", "grafana-dashboard.json"} {
		raw, _ := os.ReadFile(file)
		text := expand.Replace(string(raw))
		tmp := filepath.Join(t.TempDir(), file)
		os.WriteFile(tmp, []byte(text+strings.NewReplacer("samsyn_(node|coordinator)_", "samsyn_coordinator_").Replace(string(raw))), 0o600)
		for _, m := range used(t, tmp) {
			if !have[m] {
				t.Errorf("%s uses %s, which no daemon exports", file, m)
			}
		}
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	raw, _ := os.ReadFile("grafana-dashboard.json")
	if err := json.Unmarshal(raw, &dash); err != nil || len(dash.Panels) < 10 {
		t.Fatalf("dashboard: %d panels, %v", len(dash.Panels), err)
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 || p.Targets[0].Expr == "" {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}

func TestAlertRulesPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("SAMSYN_REQUIRE_PROMTOOL") != "" {
			t.Fatal("promtool is required (apt-get install prometheus)")
		}
		t.Skip("promtool is not installed: the alert rules were not checked")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
