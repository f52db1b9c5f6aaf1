package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"github.com/samsyn/samsyn/node/nodetest"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildBinary builds the samsyn binary once for the tests that run it as a child process.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "samsyn")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/samsyn")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build samsyn: %v\n%s", err, out)
	}
	// The analysis plugins beside it, as make build puts them.
	plugins := nodetest.Plugins(t)
	entries, _ := os.ReadDir(plugins)
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(plugins, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(filepath.Dir(bin), e.Name()), raw, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

// demoRun is one `samsyn demo` child process.
type demoRun struct {
	cmd   *exec.Cmd
	ready string
	mu    sync.Mutex
	lines []string
}

func (d *demoRun) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

// demoDialOut are the demo's nodes that dial out to the coordinator.
var demoDialOut = []string{"hbs", "stockholm", "roslagen", "varna"}

func startDemo(t *testing.T, bin, dir string) *demoRun {
	t.Helper()
	// Half the nodes dial out (among them the two the fault tests below stop and hang), half
	// listen: both modes in one federation.
	cmd := exec.Command(bin, "demo", "--dir", dir, "--port-offset", "1000", "--log-level", "warn", "--dial-out="+strings.Join(demoDialOut, ","))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &demoRun{cmd: cmd}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	readyc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.lines = append(d.lines, line)
			d.mu.Unlock()
			if url, ok := strings.CutPrefix(line, "ready "); ok {
				readyc <- url
			}
		}
		close(readyc)
	}()
	select {
	case url, ok := <-readyc:
		if !ok {
			cmd.Wait()
			t.Fatalf("demo exited before ready:\n%s", d.output())
		}
		d.ready = url
	case <-time.After(120 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("demo not ready in 120 s:\n%s", d.output())
	}
	return d
}

// survivors lists processes whose command line mentions dir.
func survivors(dir string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(raw), "\x00", " ")
		if strings.Contains(cmdline, dir) && !strings.Contains(cmdline, "go test") {
			out = append(out, e.Name()+": "+cmdline)
		}
	}
	return out
}

func waitNoSurvivors(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := survivors(dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left behind:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func getJSON(t *testing.T, url, token string, out any) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %s", url, resp.Status, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatal(err)
	}
}

func TestDemoE2EStartsServesStopsAndLeavesNothingBehind(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole federation as processes")
	}
	bin := buildBinary(t)
	dir := filepath.Join(t.TempDir(), "demo")
	first := time.Now()
	d := startDemo(t, bin, dir)
	t.Logf("first start ready in %s", time.Since(first).Round(time.Millisecond))
	var creds struct {
		Coordinator string            `json:"coordinator"`
		Tokens      map[string]string `json:"tokens"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(raw, &creds)
	if fi, _ := os.Stat(filepath.Join(dir, "credentials.json")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials.json has mode %v", fi.Mode())
	}
	// Stores and state are the owner's alone; nothing the demo writes is readable by others.
	for _, p := range []string{"nodes/hbs/store.duckdb", "nodes/roslagen/store.duckdb", "coordinator/coordinator.sqlite", "nodes/hbs/secret"} {
		if fi, err := os.Stat(filepath.Join(dir, p)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v %v, want 0600", p, fi.Mode(), err)
		}
	}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".pem") && !strings.HasSuffix(p, ".pub") && !strings.Contains(p, "catalog") && !strings.Contains(p, "exports") {
			if fi, err := d.Info(); err == nil && fi.Mode().Perm()&0o007 != 0 {
				t.Errorf("%s is readable by others: %v", p, fi.Mode())
			}
		}
		return nil
	})
	// Every node is healthy in the coordinator's eyes too (its first connection to a node may
	// take a moment on a loaded machine: poll, within a bound).
	var nodes []struct {
		Association, Status, Error, Mode string
		TunnelSince                      *time.Time `json:"tunnel_since"`
		LastSeen                         *time.Time `json:"last_seen"`
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		getJSON(t, creds.Coordinator+"/api/v1/nodes", creds.Tokens["admin"], &nodes)
		healthy := 0
		for _, n := range nodes {
			dialOut := slices.Contains(demoDialOut, n.Association)
			if (n.Mode == "dial-out") != dialOut || (n.Mode == "listen") == dialOut {
				t.Fatalf("%s: mode %q, expected dial-out %v", n.Association, n.Mode, dialOut)
			}
			if n.Status == "healthy" && (n.LastSeen == nil || dialOut && n.TunnelSince == nil) {
				t.Fatalf("%s healthy without last_seen or its tunnel: %+v", n.Association, n)
			}
			if n.Status == "healthy" {
				healthy++
			}
		}
		if len(nodes) == 8 && healthy == 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes after 30 s: %+v\ndemo output:\n%s", nodes, d.output())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if strings.Contains(d.output(), "stopped unexpectedly") {
		t.Fatalf("a process stopped during the start:\n%s", d.output())
	}
	var studies []struct{ ID, State string }
	deadline := time.Now().Add(60 * time.Second)
	for {
		getJSON(t, creds.Coordinator+"/api/v1/studies", creds.Tokens["admin"], &studies)
		done := 0
		for _, s := range studies {
			if s.State == "released" || s.State == "failed" || s.State == "refused" {
				done++
			}
		}
		if len(studies) == 4 && done == 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	released := 0
	for _, s := range studies {
		if s.State == "released" {
			released++
		}
	}
	if released < 3 {
		t.Fatalf("standard studies: %+v", studies)
	}

	pooledSmallPartsOverProcesses(t, bin, dir, creds.Coordinator, creds.Tokens)
	auditAnchorCatchesATruncatedLog(t, bin, dir, creds.Coordinator, creds.Tokens)
	cliStudy(t, bin, dir, creds.Coordinator, creds.Tokens)
	nodeDropsAndComesBack(t, d, bin, dir, creds.Coordinator, creds.Tokens)
	nodeHangsAndResumes(t, bin, dir, creds.Coordinator, creds.Tokens)
	cliSQL(t, bin, dir)
	cliImportThroughNode(t, bin, dir)
	standingRerunOnNewData(t, bin, dir, creds.Coordinator, creds.Tokens)
	certificateRotatedWithoutRestart(t, bin, dir, creds.Coordinator, creds.Tokens)
	checkMetrics(t, "http://127.0.0.1:9090/metrics", "samsyn_coordinator_results_released_total", // 8090 + the port offset
		`samsyn_build_info{daemon="coordinator"`, `samsyn_coordinator_tunnel_up{identity="samsyn://node/hbs"} 1`, "samsyn_coordinator_http_requests_total{")
	if code, _, _ := call(t, "GET", creds.Coordinator+"/metrics", "", nil, ""); code == http.StatusOK {
		t.Fatal("the coordinator's API port serves /metrics")
	}
	checkMetrics(t, "http://127.0.0.1:8202/metrics", "samsyn_node_flight_requests_total", `samsyn_build_info{daemon="node"`,
		"samsyn_node_tunnel_up 1", "samsyn_node_data_last_import_timestamp_seconds 1", "samsyn_node_sql_rows_total")

	d.cmd.Process.Signal(os.Interrupt)
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("demo exited with %v:\n%s", err, d.output())
	}
	waitNoSurvivors(t, dir)

	again := time.Now()
	d = startDemo(t, bin, dir)
	restart := time.Since(again)
	t.Logf("restart ready in %s", restart.Round(time.Millisecond))
	if !strings.Contains(d.output(), "reusing the demo federation") {
		t.Fatalf("the restart did not reuse the federation:\n%s", d.output())
	}
	getJSON(t, creds.Coordinator+"/api/v1/studies", creds.Tokens["admin"], &studies)
	studies = slices.DeleteFunc(studies, func(s struct{ ID, State string }) bool { return strings.Contains(s.ID, "-r") }) // standing reruns
	// the four standard studies, five run through the CLI and one awaiting approval
	if len(studies) != 10 {
		t.Fatalf("the restart seeded studies again: %d", len(studies))
	}
	// Killed outright, the demo cannot clean up: the kernel must stop its children.
	d.cmd.Process.Signal(syscall.SIGKILL)
	d.cmd.Wait()
	waitNoSurvivors(t, dir)
}

// checkMetrics scrapes an exposition, requires a metric in it, and lints it with Prometheus's
// promtool. CI installs promtool and sets SAMSYN_REQUIRE_PROMTOOL=1 so the lint never skips there.
func checkMetrics(t *testing.T, url string, wants ...string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range wants {
		if !strings.Contains(string(raw), want) {
			t.Fatalf("%s has no %s", url, want)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("SAMSYN_REQUIRE_PROMTOOL") != "" {
			t.Fatal("promtool is required (apt-get install prometheus)")
		}
		t.Logf("promtool not installed: the exposition of %s was not linted", url)
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(raw))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics %s: %v\n%s", url, err, out)
	}
}

// cliStudy runs a study through the samsyn CLI as its users would: the evaluator submits,
// each data owner approves with their key, the evaluator follows and downloads every format.
func cliStudy(t *testing.T, bin, dir, coordinator string, tokens map[string]string) {
	t.Helper()
	run := cli(t, bin, coordinator)
	file := filepath.Join(t.TempDir(), "study.yaml")
	os.WriteFile(file, []byte(`title: Utfall per kommun
purpose: e2e via the CLI
queries:
  - id: exits_by_municipality
    params: {from: 2020-04-01, to: 2022-09-30}
associations: all
on_node_failure: partial
`), 0o644)
	id := submitApproved(t, run, dir, tokens, file)
	table := run(tokens["evaluator"], "study", "results", id)
	if !strings.Contains(table, "Huddinge") || !strings.Contains(table, "Totalt") {
		t.Fatalf("table:\n%s", table)
	}
	// The evaluator's and data owner's tools: the list of studies, the catalog with its
	// parameters, what an approval signs in words, and the real mistake named.
	if out := run(tokens["evaluator"], "study", "list", "--state", "released"); !strings.Contains(out, id) || !strings.Contains(out, "released") {
		t.Fatalf("study list:\n%s", out)
	}
	if out, err := exec.Command(bin, "catalog", "list", filepath.Join(dir, "catalog")).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "what_works") || !strings.Contains(string(out), "the first day of a quarter") {
		t.Fatalf("catalog list: %v\n%s", err, out)
	}
	second := submitStudy(t, run, tokens, file)
	approve := exec.Command(bin, "study", "approve", second, "--association", "hbs", "--key", filepath.Join(dir, "keys", "hbs.key"))
	approve.Env = append(os.Environ(), "SAMSYN_COORDINATOR="+coordinator, "SAMSYN_TOKEN="+tokens["association:hbs"])
	if out, err := approve.CombinedOutput(); err != nil || !strings.Contains(string(out), "You approve, for hbs") || !strings.Contains(string(out), "Avslut per kommun") {
		t.Fatalf("approve in words: %v\n%s", err, out)
	}
	if out := run(tokens["evaluator"], "study", "list", "--state", "awaiting_approval"); !strings.Contains(out, second) || strings.Contains(out, "hbs, ") || !strings.Contains(out, "varna") {
		t.Fatalf("study list of those awaiting approval:\n%s", out)
	}
	if out := run(tokens["association:varna"], "study", "list", "--awaiting-me"); !strings.Contains(out, second) {
		t.Fatalf("varna's studies awaiting its decision:\n%s", out)
	}
	if out := run(tokens["association:hbs"], "study", "list", "--awaiting-me"); strings.Contains(out, second) {
		t.Fatalf("hbs has decided, yet the study awaits it:\n%s", out)
	}
	pub := exec.Command(bin, "study", "approve", second, "--association", "varna", "--key", filepath.Join(dir, "keys", "varna.pub"))
	pub.Env = append(os.Environ(), "SAMSYN_COORDINATOR="+coordinator, "SAMSYN_TOKEN="+tokens["association:varna"])
	if out, err := pub.CombinedOutput(); err == nil || !strings.Contains(string(out), "public key") {
		t.Fatalf("a .pub file as --key: %v\n%s", err, out)
	}
	for _, format := range []string{"csv", "json", "arrow", "parquet", "xlsx"} {
		outFile := filepath.Join(t.TempDir(), "result."+format)
		run(tokens["evaluator"], "study", "results", id, "--format", format, "--out", outFile)
		if fi, err := os.Stat(outFile); err != nil || fi.Size() < 100 {
			t.Fatalf("%s download: %v", format, err)
		}
	}
	// Roslagen refuses: the study is pooled over the other seven, and Roslagen's six
	// municipalities are missing from the result, never zero.
	id = submitApproved(t, run, dir, tokens, file, "roslagen")
	jsonFile := filepath.Join(t.TempDir(), "partial.json")
	run(tokens["evaluator"], "study", "results", id, "--format", "json", "--out", jsonFile)
	var partial struct {
		Rows   []map[string]any `json:"rows"`
		Checks struct {
			Associations []string `json:"associations"`
			Pooled       bool     `json:"pooled"`
		} `json:"checks"`
	}
	raw, _ := os.ReadFile(jsonFile)
	if err := json.Unmarshal(raw, &partial); err != nil {
		t.Fatal(err)
	}
	if len(partial.Checks.Associations) != 7 || slices.Contains(partial.Checks.Associations, "roslagen") || !partial.Checks.Pooled {
		t.Fatalf("partial result checks: %+v", partial.Checks)
	}
	roslagen := map[string]bool{"0115": true, "0117": true, "0160": true, "0162": true, "0187": true, "0188": true}
	missingRows := 0
	for _, r := range partial.Rows {
		if !roslagen[fmt.Sprint(r["municipality"])] {
			continue
		}
		if r["missing"] != true || r["n"] != nil {
			t.Fatalf("a municipality of the refusing association is not marked missing: %v", r)
		}
		missingRows++
	}
	if missingRows != 6*7 { // six municipalities, each outcome and its total
		t.Fatalf("%d missing rows for Roslagen's municipalities", missingRows)
	}
	csvFile := filepath.Join(t.TempDir(), "partial.csv")
	run(tokens["evaluator"], "study", "results", id, "--format", "csv", "--out", csvFile)
	if csv, _ := os.ReadFile(csvFile); !strings.Contains(strings.SplitN(string(csv), "\n", 2)[0], "missing") {
		t.Fatalf("the CSV download does not carry the missing flag: %s", strings.SplitN(string(csv), "\n", 2)[0])
	}

	// A steering-group token may read the release but not submit.
	cmd := exec.Command(bin, "study", "submit", file)
	cmd.Env = append(os.Environ(), "SAMSYN_COORDINATOR="+coordinator, "SAMSYN_TOKEN="+tokens["steering"])
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "403") {
		t.Fatalf("steering submitted a study: %s", out)
	}
}

// pooledSmallPartsOverProcesses checks the standard study's outcome by method over the whole
// project period against each association's own true counts, read through its analysts' SQL
// service: cells in which several associations have only 1–4 participants are released, and
// each released count is within the pooled noise (±2 per contributing association) of the
// true county total.
func pooledSmallPartsOverProcesses(t *testing.T, bin, dir, coordinator string, tokens map[string]string) {
	t.Helper()
	var studies []struct {
		ID, Title string
		Queries   []struct{ ID string } `json:"queries"`
	}
	getJSON(t, coordinator+"/api/v1/studies", tokens["steering"], &studies)
	var path string
	for _, s := range studies {
		if !strings.Contains(s.Title, "MIA Vidare") {
			continue
		}
		for i, q := range s.Queries {
			if q.ID == "outcome_by_method" {
				path = fmt.Sprintf("/api/v1/studies/%s/results/%d", s.ID, i)
			}
		}
	}
	if path == "" {
		t.Fatal("no standard study of the project period with outcome_by_method")
	}
	var table struct {
		Rows []map[string]any `json:"rows"`
	}
	getJSON(t, coordinator+path, tokens["steering"], &table)
	truth := map[string]int{}
	small := map[string]int{}
	holders := map[string]int{}
	for _, assoc := range []string{"ostra-sodertorn", "hbs", "stockholm", "sodertalje", "varna", "roslagen", "suvs", "samsund"} {
		out, err := exec.Command(bin, "sql", "--config", filepath.Join(dir, "nodes", assoc, "node.yaml"), "--format", "csv", "-c",
			`SELECT e.method || '|' || e.outcome AS k, count(DISTINCT p.participant_key) AS n FROM participant p JOIN episode e USING (participant_key)
			 WHERE e.exit_date BETWEEN DATE '2020-04-01' AND DATE '2022-09-30' AND e.outcome IS NOT NULL GROUP BY 1`).CombinedOutput()
		if err != nil {
			t.Fatalf("samsyn sql on %s: %v\n%s", assoc, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n")[1:] {
			k, nText, _ := strings.Cut(line, ",")
			var n int
			fmt.Sscan(nText, &n)
			truth[k] += n
			holders[k]++
			if n >= 1 && n <= 4 {
				small[k]++
			}
		}
	}
	released := 0
	for _, r := range table.Rows {
		k := fmt.Sprint(r["method"], "|", r["outcome"])
		if small[k] < 2 || r["n"] == nil {
			continue
		}
		n := int(r["n"].(float64))
		if d := n - truth[k]; d > 2*holders[k] || -d > 2*holders[k] {
			t.Fatalf("%s: released %d, true %d over %d associations", k, n, truth[k], holders[k])
		}
		released++
	}
	if released == 0 {
		t.Fatalf("no cell with small parts at several associations was released (%d such cells)", len(small))
	}
	t.Logf("%d cells with 1–4 participants at two or more associations released pooled", released)
}

// auditAnchorCatchesATruncatedLog: the coordinator keeps the last audit entry each node
// reported; a copy of hbs's log checks against it, and the same copy with its last entry
// removed still has an intact chain but fails its anchor.
func auditAnchorCatchesATruncatedLog(t *testing.T, bin, dir, coordinator string, tokens map[string]string) {
	t.Helper()
	var nodes []struct {
		Association string
		Audit       *struct {
			Seq  int64  `json:"seq"`
			Hash string `json:"hash"`
		} `json:"audit"`
	}
	getJSON(t, coordinator+"/api/v1/nodes", tokens["admin"], &nodes)
	var anchor string
	for _, n := range nodes {
		if n.Association == "hbs" && n.Audit != nil {
			anchor = fmt.Sprintf("%d:%s", n.Audit.Seq, n.Audit.Hash)
		}
	}
	if anchor == "" {
		t.Fatalf("no audit anchor for hbs in /api/v1/nodes: %+v", nodes)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "nodes", "hbs", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
	seq, _, _ := strings.Cut(anchor, ":")
	var keep []string
	for _, l := range lines {
		keep = append(keep, l)
		if strings.HasPrefix(l, `{"seq":`+seq+`,`) {
			break
		}
	}
	whole := filepath.Join(t.TempDir(), "audit.log")
	content := strings.Join(keep, "")
	if !strings.HasSuffix(content, "\n") {
		content += "\n"
	}
	os.WriteFile(whole, []byte(content), 0o600)
	if out, err := exec.Command(bin, "node", "audit", "verify", "--file", whole, "--anchor", anchor).CombinedOutput(); err != nil {
		t.Fatalf("the log up to its anchor: %v\n%s", err, out)
	}
	cut := filepath.Join(t.TempDir(), "audit.log")
	os.WriteFile(cut, []byte(strings.Join(keep[:len(keep)-1], "")), 0o600)
	if out, err := exec.Command(bin, "node", "audit", "verify", "--file", cut).CombinedOutput(); err != nil {
		t.Fatalf("a log cut at a line boundary should have an intact chain: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "node", "audit", "verify", "--file", cut, "--anchor", anchor).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "removed from its end") {
		t.Fatalf("a truncated log passed its anchor: %v\n%s", err, out)
	}
}

// nodeDropsAndComesBack kills Roslagen's node process and keeps it from restarting (its
// config moved away), runs a pooled study, which goes on without it and marks it missing, then
// gives the config back and waits for the supervisor to bring the node back.
func nodeDropsAndComesBack(t *testing.T, d *demoRun, bin, dir, coordinator string, tokens map[string]string) {
	t.Helper()
	cfg := filepath.Join(dir, "nodes", "roslagen", "node.yaml")
	var pid int
	for _, p := range survivors(cfg) {
		fmt.Sscanf(p, "%d:", &pid)
	}
	if pid == 0 {
		t.Fatal("no process serves roslagen")
	}
	if err := os.Rename(cfg, cfg+".away"); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			os.Rename(cfg+".away", cfg)
		}
	}
	defer restore()
	syscall.Kill(pid, syscall.SIGKILL)
	status := func() string {
		var nodes []struct{ Association, Status string }
		getJSON(t, coordinator+"/api/v1/nodes", tokens["admin"], &nodes)
		for _, n := range nodes {
			if n.Association == "roslagen" {
				return n.Status
			}
		}
		return ""
	}
	deadline := time.Now().Add(30 * time.Second)
	for status() == "healthy" {
		if time.Now().After(deadline) {
			t.Fatal("roslagen still healthy 30 s after its process was killed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	run := cli(t, bin, coordinator)
	file := filepath.Join(t.TempDir(), "study.yaml")
	os.WriteFile(file, []byte("title: Utan Roslagen\npurpose: e2e node down\nqueries:\n  - id: exits_by_association\n    params: {from: 2020-04-01, to: 2022-09-30}\nassociations: all\non_node_failure: partial\n"), 0o644)
	id := submitApproved(t, run, dir, tokens, file)
	jsonFile := filepath.Join(t.TempDir(), "down.json")
	run(tokens["evaluator"], "study", "results", id, "--format", "json", "--out", jsonFile)
	var res struct {
		Rows   []map[string]any `json:"rows"`
		Checks struct {
			Associations []string `json:"associations"`
			Missing      []string `json:"missing_associations"`
			Pooled       bool     `json:"pooled"`
		} `json:"checks"`
	}
	raw, _ := os.ReadFile(jsonFile)
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Checks.Associations) != 7 || len(res.Checks.Missing) != 1 || res.Checks.Missing[0] != "roslagen" || !res.Checks.Pooled {
		t.Fatalf("a study with a node down: %+v", res.Checks)
	}
	for _, r := range res.Rows {
		if r["association"] == "roslagen" && (r["missing"] != true || r["n"] != nil) {
			t.Fatalf("the down association's row is not missing: %v", r)
		}
	}
	restore()
	deadline = time.Now().Add(90 * time.Second)
	for status() != "healthy" {
		if time.Now().After(deadline) {
			t.Fatalf("roslagen did not come back within 90 s:\n%s", d.output())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !strings.Contains(d.output(), "node-roslagen stopped unexpectedly") || !strings.Contains(d.output(), "node-roslagen restarted") {
		t.Fatalf("the demo did not say it restarted the node:\n%s", d.output())
	}
}

// nodeHangsAndResumes stops Varna's node process (SIGSTOP: it holds its connections and
// answers nothing), runs a pooled study of two queries, which leaves Varna out after one
// deadline and marks it missing in both, then resumes the node and waits for it to be
// healthy; Varna's audit log holds at most one release per query of the study.
func nodeHangsAndResumes(t *testing.T, bin, dir, coordinator string, tokens map[string]string) {
	t.Helper()
	var pid int
	for _, p := range survivors(filepath.Join(dir, "nodes", "varna", "node.yaml")) {
		fmt.Sscanf(p, "%d:", &pid)
	}
	if pid == 0 {
		t.Fatal("no process serves varna")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	defer resume()
	run := cli(t, bin, coordinator)
	file := filepath.Join(t.TempDir(), "study.yaml")
	os.WriteFile(file, []byte("title: Varna svarar inte\npurpose: e2e hung node\nqueries:\n"+
		"  - {id: outcome_by_education, params: {from: 2020-04-01, to: 2022-09-30}}\n"+
		"  - {id: outcome_by_support_years, params: {from: 2020-04-01, to: 2022-09-30}}\n"+
		"associations: all\non_node_failure: partial\n"), 0o644)
	id := submitApproved(t, run, dir, tokens, file)
	for q := 0; q < 2; q++ {
		var res struct {
			Checks struct {
				Missing []string `json:"missing_associations"`
			} `json:"checks"`
		}
		getJSON(t, fmt.Sprintf("%s/api/v1/studies/%s/results/%d", coordinator, id, q), tokens["evaluator"], &res)
		if !slices.Equal(res.Checks.Missing, []string{"varna"}) {
			t.Fatalf("query %d with varna hung: missing %v", q, res.Checks.Missing)
		}
	}
	resume()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var nodes []struct{ Association, Status string }
		getJSON(t, coordinator+"/api/v1/nodes", tokens["admin"], &nodes)
		healthy := false
		for _, n := range nodes {
			healthy = healthy || n.Association == "varna" && n.Status == "healthy"
		}
		if healthy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("varna not healthy 60 s after it was resumed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for q, n := range releasesInAudit(t, filepath.Join(dir, "nodes", "varna", "audit.log"), id) {
		if n > 1 {
			t.Fatalf("varna released %s %d times", q, n)
		}
	}
}

// cli returns a runner of the samsyn CLI against coordinator, failing the test on an error.
func cli(t *testing.T, bin, coordinator string) func(token string, args ...string) string {
	return func(token string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "SAMSYN_COORDINATOR="+coordinator, "SAMSYN_TOKEN="+token)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("samsyn %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
		}
		return string(out)
	}
}

// submitStudy submits the study file through the CLI and returns its id.
func submitStudy(t *testing.T, run func(string, ...string) string, tokens map[string]string, file string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(run(tokens["evaluator"], "study", "submit", file)), "\n")
	return lines[len(lines)-1]
}

// submitApproved submits the study file through the CLI, has every association's data owner
// approve it (those in refusing refuse), waits until it is released and returns its id.
func submitApproved(t *testing.T, run func(string, ...string) string, dir string, tokens map[string]string, file string, refusing ...string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(run(tokens["evaluator"], "study", "submit", file)), "\n")
	id := lines[len(lines)-1]
	if !strings.HasPrefix(id, "st-") {
		t.Fatalf("submit printed %q", lines)
	}
	for role, token := range tokens {
		assoc, ok := strings.CutPrefix(role, "association:")
		switch {
		case !ok:
		case slices.Contains(refusing, assoc):
			run(token, "study", "refuse", id, "--association", assoc, "--reason", "e2e: not this time")
		default:
			run(token, "study", "approve", id, "--association", assoc, "--key", filepath.Join(dir, "keys", assoc+".key"))
		}
	}
	if out := run(tokens["evaluator"], "study", "status", id, "--watch"); !strings.Contains(out, "released") {
		t.Fatalf("status: %s", out)
	}
	return id
}

// cliSQL queries one node's own data through its Flight SQL service, as an analyst would.
func cliSQL(t *testing.T, bin, dir string) {
	t.Helper()
	cfg := filepath.Join(dir, "nodes", "hbs", "node.yaml")
	out, err := exec.Command(bin, "sql", "--config", cfg, "-c", "SELECT count(*) AS n FROM participant", "--format", "csv").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "n\n") {
		t.Fatalf("samsyn sql: %v\n%s", err, out)
	}
	shell := exec.Command(bin, "sql", "--config", cfg)
	shell.Stdin = strings.NewReader("\\d\n\\d followup\nSELECT count(*) AS answers\n  FROM survey;\n\\q\n")
	out, err = shell.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "participant") || !strings.Contains(string(out), "goal_progress") || !strings.Contains(string(out), "answers") {
		t.Fatalf("the interactive shell: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "sql", "--config", cfg, "-c", "DELETE FROM participant").CombinedOutput(); err == nil || !strings.Contains(string(out), "read-only") {
		t.Fatalf("a write through samsyn sql: %v\n%s", err, out)
	}
	// The serving node's configuration is locked: an analyst can neither lift its memory limit
	// nor turn on profiling (which would print the node's statements with their bound values,
	// the record-key key among them), for the whole database or their own connection.
	for _, q := range []string{"SET GLOBAL memory_limit = '100GB'", "SET GLOBAL enable_profiling = 'json'",
		"SET enable_profiling = 'query_tree'", "SET GLOBAL enable_external_access = true"} {
		if out, err := exec.Command(bin, "sql", "--config", cfg, "-c", q).CombinedOutput(); err == nil || !strings.Contains(string(out), "configuration has been locked") {
			t.Fatalf("an analyst changed the store's configuration with %q: %v\n%s", q, err, out)
		}
	}
	// And no function of Samsyn's is in the catalog: record keys are computed inside the node's
	// own statements from a key only they bind.
	if out, err := exec.Command(bin, "sql", "--config", cfg, "--format", "csv", "-c",
		"SELECT count(*) AS n FROM duckdb_functions() WHERE function_name ILIKE '%samsyn%'").CombinedOutput(); err != nil || string(out) != "n\n0\n" {
		t.Fatalf("Samsyn's functions in the store's catalog: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "sql", "--config", cfg, "--token", "wrong-token-0123456789", "-c", "SELECT 1").CombinedOutput(); err == nil || !strings.Contains(string(out), "Unauthenticated") {
		t.Fatalf("a wrong token: %v\n%s", err, out)
	}
	// The README's preview, while the node serves: the node runs it and audits it.
	out, err = exec.Command(bin, "node", "preview", "exits_by_association", "--config", cfg,
		"--param", "from=2021-01-01", "--param", "to=2021-12-31").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the node is serving") || !strings.Contains(string(out), "pooled contribution") ||
		!strings.Contains(string(out), "true (local only)") {
		t.Fatalf("preview on a serving node: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "node", "preview", "exits_by_association", "--config", cfg,
		"--param", "from=2021-01-01", "--param", "to=2021-06-30").CombinedOutput(); err == nil || !strings.Contains(string(out), "fixed grid") {
		t.Fatalf("a preview off the period grid: %v\n%s", err, out)
	}
	if raw, _ := os.ReadFile(filepath.Join(dir, "nodes", "hbs", "audit.log")); !strings.Contains(string(raw), `"action":"preview"`) {
		t.Fatal("the preview is not in the node's audit log")
	}
}

// certificateRotatedWithoutRestart replaces SUVS's node certificate with samsyn pki rotate
// and sends the node SIGHUP: the same process, now with the new certificate, answers the
// next study; the new certificate's serial is what the coordinator sees.
func certificateRotatedWithoutRestart(t *testing.T, bin, dir, coordinator string, tokens map[string]string) {
	t.Helper()
	var pid int
	for _, p := range survivors(filepath.Join(dir, "nodes", "suvs", "node.yaml")) {
		fmt.Sscanf(p, "%d:", &pid)
	}
	if pid == 0 {
		t.Fatal("no process serves suvs")
	}
	out, err := exec.Command(bin, "pki", "rotate", "--ca", filepath.Join(dir, "pki"), "--identity", "samsyn://node/suvs",
		"--out", filepath.Join(dir, "pki", "node-suvs")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rotated samsyn://node/suvs") {
		t.Fatalf("pki rotate: %v\n%s", err, out)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		raw, _ := os.ReadFile(filepath.Join(dir, "logs", "node-suvs.log"))
		if strings.Contains(string(raw), "certificates reloaded") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node did not reload its certificates:\n%s", raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	file := filepath.Join(t.TempDir(), "after-rotation.yaml")
	os.WriteFile(file, []byte("title: Efter byte av certifikat\npurpose: e2e\nqueries:\n  - {id: targets_by_association, params: {from: 2021-01-01, to: 2021-12-31}}\nassociations: all\non_node_failure: fail\n"), 0o644)
	run := cli(t, bin, coordinator)
	id := submitApproved(t, run, dir, tokens, file)
	if out := run(tokens["evaluator"], "study", "status", id); !strings.Contains(out, "released") {
		t.Fatalf("a study after the rotation: %s", out)
	}
	for _, p := range survivors(filepath.Join(dir, "nodes", "suvs", "node.yaml")) {
		var again int
		fmt.Sscanf(p, "%d:", &again)
		if again != pid {
			t.Fatalf("the node was restarted (%d, then %d): rotation should not need it", pid, again)
		}
	}
}

// standingRerunOnNewData imports a new participant into hbs's serving node; the demo's
// standing standard study (the whole project, rerun on new data) is rerun by the coordinator
// on its own, and released.
func standingRerunOnNewData(t *testing.T, bin, dir, coordinator string, tokens map[string]string) {
	t.Helper()
	cfg := filepath.Join(dir, "nodes", "hbs", "node.yaml")
	raw, err := os.ReadFile(filepath.Join(dir, "exports", "hbs", "participant.csv"))
	if err != nil {
		t.Fatal(err)
	}
	header := strings.SplitN(string(raw), "\n", 2)[0]
	cols := strings.Split(header, ",")
	vals := map[string]string{"anonymous_id": "anon-standing-1", "association": "hbs", "municipality": "0126", "gender": "K", "birth_year": "1985",
		"education": "upper_secondary", "referral_party": "FK", "income_before": "other", "years_on_public_support": "lt1", "consent": "false"}
	row := make([]string, len(cols))
	for i, c := range cols {
		row[i] = vals[c]
	}
	more := filepath.Join(t.TempDir(), "participant.csv")
	os.WriteFile(more, append(raw, []byte(strings.Join(row, ",")+"\n")...), 0o644)
	if out, err := exec.Command(bin, "node", "import", "--config", cfg, "--table", "participant", more).CombinedOutput(); err != nil || strings.Contains(string(out), "nothing changed") {
		t.Fatalf("import new data through the node: %v\n%s", err, out)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		var studies []struct{ ID, State, Parent string }
		getJSON(t, coordinator+"/api/v1/studies", tokens["admin"], &studies)
		for _, s := range studies {
			if s.Parent != "" && strings.HasSuffix(s.ID, "-r1") && s.State == "released" {
				t.Logf("standing study rerun after new data: %s", s.ID)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no standing rerun released 90 s after new data: %+v", studies)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// cliImportThroughNode imports while the node serves: the node, DuckDB's one writer, does it.
func cliImportThroughNode(t *testing.T, bin, dir string) {
	t.Helper()
	cfg := filepath.Join(dir, "nodes", "hbs", "node.yaml")
	out, err := exec.Command(bin, "node", "import", "--config", cfg, "--table", "participant", filepath.Join(dir, "exports", "hbs", "participant.csv")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "handing the import to it") || !strings.Contains(string(out), "nothing changed") {
		t.Fatalf("re-import through the node: %v\n%s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "participant.csv")
	os.WriteFile(bad, []byte("anonymous_id,municipality,gender,birth_year,education,referral_party,income_before,years_on_public_support,consent\nanon-1,0126,X,1990,upper_secondary,FK,other,lt1,false\n"), 0o644)
	out, err = exec.Command(bin, "node", "import", "--config", cfg, "--table", "participant", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), bad+`:2: gender: "X": one of K, M`) {
		t.Fatalf("a bad file through the node: %v\n%s", err, out)
	}
}
