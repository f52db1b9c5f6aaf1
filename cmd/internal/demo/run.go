package demo

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/samsyn/samsyn/cmd/internal/keyfile"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/deploy/federation"
	"github.com/samsyn/samsyn/queries"
)

// child is one supervised process.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

// Run builds (or reuses) the federation, starts it, seeds the standard studies, prints
// "ready <URL>" and waits until ctx ends; then it stops every child.
func Run(ctx context.Context, o Options) error {
	f, err := plan(o)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := Setup(ctx, o, f); err != nil {
		return err
	}
	if err := portsFree(o, f); err != nil {
		return err
	}
	logDir := filepath.Join(o.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o750); err != nil {
		return err
	}
	var children []*child
	stopAll := func() {
		for _, c := range children {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
		}
		deadline := time.After(10 * time.Second)
		for _, c := range children {
			select {
			case <-c.done:
			case <-deadline:
				_ = c.cmd.Process.Kill()
				<-c.done
			}
		}
	}
	defer stopAll()
	exited := make(chan string, len(f.Nodes)+1)
	argsOf := map[string][]string{}
	spawn := func(name string, args ...string) error {
		argsOf[name] = args
		logf, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return err
		}
		cmd := exec.Command(o.Binary, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		// The kernel stops the child if the demo dies without cleaning up.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		if err := cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("start %s: %w", name, err)
		}
		c := &child{name: name, cmd: cmd, done: make(chan error, 1)}
		go func() {
			err := cmd.Wait()
			logf.Close()
			c.done <- err
			exited <- name
		}()
		children = append(children, c)
		return nil
	}
	for _, n := range f.Nodes {
		if err := spawn("node-"+n.Association, "node", "serve", "--config", filepath.Join(o.Dir, "nodes", n.Association, "node.yaml")); err != nil {
			return err
		}
	}
	if err := spawn("coordinator", "coordinator", "serve", "--config", filepath.Join(o.Dir, "coordinator", "coordinator.yaml")); err != nil {
		return err
	}
	var urls []string
	for _, n := range f.Nodes {
		urls = append(urls, "http://"+n.Health+"/readyz")
	}
	urls = append(urls, "http://"+f.Coordinator.HTTP+"/readyz")
	if err := waitReady(ctx, urls, exited, logDir, 60*time.Second); err != nil {
		return err
	}
	creds, err := readCredentials(o.Dir)
	if err != nil {
		return err
	}
	if err := seedStudies(ctx, o, creds); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "credentials %s\n", filepath.Join(o.Dir, "credentials.json"))
	fmt.Fprintf(o.Out, "logs %s\n", logDir)
	fmt.Fprintf(o.Out, "started in %s; Ctrl-C stops every process\n", time.Since(start).Round(100*time.Millisecond))
	fmt.Fprintf(o.Out, "ready %s/\n", creds.Coordinator)
	// A node that stops is started again, with backoff, and the demo says so: the rest of the
	// federation goes on (a study meanwhile runs without it and says so). The coordinator
	// stopping ends the demo.
	backoff := map[string]time.Duration{}
	lastStart := map[string]time.Time{}
	restart := make(chan string, len(f.Nodes))
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(o.Out, "stopping the federation")
			return nil
		case name := <-exited:
			if name == "coordinator" {
				return fmt.Errorf("%s stopped unexpectedly; see %s", name, filepath.Join(logDir, name+".log"))
			}
			wait := backoff[name]
			switch {
			case wait == 0 || time.Since(lastStart[name]) > time.Minute:
				wait = time.Second
			case wait < 30*time.Second:
				wait *= 2
			}
			backoff[name] = wait
			fmt.Fprintf(o.Out, "%s stopped unexpectedly (see %s); restarting it in %s\n", name, filepath.Join(logDir, name+".log"), wait)
			time.AfterFunc(wait, func() { restart <- name })
		case name := <-restart:
			if ctx.Err() != nil {
				continue
			}
			lastStart[name] = time.Now()
			if err := spawn(name, argsOf[name]...); err != nil {
				fmt.Fprintf(o.Out, "restart %s: %v\n", name, err)
				go func() { exited <- name }()
				continue
			}
			fmt.Fprintf(o.Out, "%s restarted\n", name)
		}
	}
}

func waitReady(ctx context.Context, urls []string, exited chan string, logDir string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: time.Second}
	pending := append([]string{}, urls...)
	for len(pending) > 0 {
		select {
		case name := <-exited:
			return fmt.Errorf("%s stopped while starting; see %s", name, tail(filepath.Join(logDir, name+".log")))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy after %s: %s", limit, strings.Join(pending, ", "))
		}
		var still []string
		for _, u := range pending {
			resp, err := client.Get(u)
			if err == nil {
				resp.Body.Close()
			}
			if err != nil || resp.StatusCode != http.StatusOK {
				still = append(still, u)
			}
		}
		pending = still
		if len(pending) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// tail returns the log's path and its last lines, for an error message.
func tail(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return path
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return path + ":\n    " + strings.Join(lines, "\n    ")
}

func readCredentials(dir string) (*Credentials, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "credentials.json"))
	if err != nil {
		return nil, err
	}
	var c Credentials
	return &c, json.Unmarshal(raw, &c)
}

// Periods of the standard studies: the MIA Vidare period and each year of it.
var Periods = []struct{ Title, From, To string }{
	{"MIA Vidare 2020–2022", "2020-04-01", "2022-09-30"},
	{"2020", "2020-01-01", "2020-12-31"},
	{"2021", "2021-01-01", "2021-12-31"},
	{"2022", "2022-01-01", "2022-12-31"},
}

// seedStudies submits and approves the standard studies once, so the dashboard has content.
func seedStudies(ctx context.Context, o Options, creds *Credentials) error {
	api := func(method, path, token string, body []byte, out any) error {
		req, err := http.NewRequestWithContext(ctx, method, creds.Coordinator+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(raw))
		}
		if out != nil {
			return json.Unmarshal(raw, out)
		}
		return nil
	}
	var existing []study.Study
	if err := api("GET", "/api/v1/studies", creds.Tokens["evaluator"], nil, &existing); err != nil {
		return err
	}
	if len(existing) > 0 {
		return nil
	}
	cat, err := queries.LoadDir(filepath.Join(o.Dir, "catalog"))
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "seeding %d standard studies (every catalog query, for the whole period and per year)\n", len(Periods))
	for i, p := range Periods {
		var b strings.Builder
		fmt.Fprintf(&b, "title: \"Styrgruppens standardtabeller %s\"\npurpose: \"Dashboardens innehåll (demo, syntetiska data)\"\non_node_failure: partial\nassociations: all\n", p.Title)
		if i == 0 {
			// The whole project's tables are a standing study: rerun when a node's data changes.
			b.WriteString("standing: {months: 12, schedule: new_data}\n")
		}
		b.WriteString("queries:\n")
		for _, id := range cat.IDs() {
			fmt.Fprintf(&b, "  - {id: %s, params: {from: %s, to: %s}}\n", id, p.From, p.To)
		}
		var s study.Study
		if err := api("POST", "/api/v1/studies", creds.Tokens["evaluator"], []byte(b.String()), &s); err != nil {
			return err
		}
		for _, assoc := range s.Associations {
			key, err := keyfile.LoadPrivate(creds.AssociationKeys[assoc])
			if err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]any{"decision": study.Approve, "signatures": study.SignApproval(&s, assoc, ed25519.PrivateKey(key))})
			if err := api("POST", "/api/v1/studies/"+s.ID+"/approvals", creds.Tokens["association:"+assoc], body, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// portsFree refuses to start when another process (an earlier demo, say) holds an address.
func portsFree(o Options, f *federation.Federation) error {
	addrs := []string{f.Coordinator.HTTP, f.Coordinator.Metrics}
	if o.anyDialsOut(f) {
		addrs = append(addrs, f.Coordinator.Tunnel)
	}
	for _, n := range f.Nodes {
		if !o.dialsOut(n.Association) {
			addrs = append(addrs, n.Flight)
		}
		addrs = append(addrs, n.Health, n.SQL)
	}
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("address %s is in use (is another demo running? stop it, or use --port-offset): %w", a, err)
		}
		ln.Close()
	}
	return nil
}
