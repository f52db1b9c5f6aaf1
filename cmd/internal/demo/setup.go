package demo

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/samsyn/samsyn/cmd/internal/keyfile"
	"github.com/samsyn/samsyn/deploy/federation"
	"github.com/samsyn/samsyn/node/config"
	"github.com/samsyn/samsyn/node/importer"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/secagg"
	"github.com/samsyn/samsyn/queries/wire/mtls"
	"github.com/samsyn/samsyn/schemas"
	"github.com/samsyn/samsyn/schemas/synth"
)

// Options configure a demo federation.
type Options struct {
	Dir          string
	HTTP         string // coordinator address; the reference file's when empty
	PortOffset   int    // added to every reference port (to run two demos side by side)
	Participants int
	Seed         uint64
	Binary       string // the samsyn binary to run children from
	Plugins      string // folder of the analysis plugins; the binary's folder when empty
	// DialOut lists the associations whose nodes dial out to the coordinator instead of
	// listening ("all" for every node).
	DialOut []string
	Out     io.Writer
	Logger  *slog.Logger
}

// Credentials is DIR/credentials.json.
type Credentials struct {
	Coordinator     string            `json:"coordinator"`
	Tokens          map[string]string `json:"tokens"`
	AssociationKeys map[string]string `json:"association_keys"`
}

const doneMarker = ".complete"

func shift(addr string, offset int) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || offset == 0 {
		return addr
	}
	p, _ := strconv.Atoi(port)
	return net.JoinHostPort(host, strconv.Itoa(p+offset))
}

// dialsOut reports whether the demo node of assoc dials out.
func (o Options) dialsOut(assoc string) bool {
	return slices.Contains(o.DialOut, "all") || slices.Contains(o.DialOut, assoc)
}

// anyDialsOut reports whether some node of f dials out.
func (o Options) anyDialsOut(f *federation.Federation) bool {
	for _, n := range f.Nodes {
		if o.dialsOut(n.Association) {
			return true
		}
	}
	return false
}

// plan is the federation with the demo's addresses.
func plan(o Options) (*federation.Federation, error) {
	f, err := federation.Reference()
	if err != nil {
		return nil, err
	}
	f.Coordinator.HTTP = shift(f.Coordinator.HTTP, o.PortOffset)
	f.Coordinator.Metrics = shift(f.Coordinator.Metrics, o.PortOffset)
	f.Coordinator.Tunnel = shift(f.Coordinator.Tunnel, o.PortOffset)
	if o.HTTP != "" {
		f.Coordinator.HTTP = o.HTTP
	}
	for _, a := range o.DialOut {
		known := a == "all"
		for _, n := range f.Nodes {
			known = known || n.Association == a
		}
		if !known {
			ids := make([]string, len(f.Nodes))
			for i, n := range f.Nodes {
				ids[i] = n.Association
			}
			return nil, fmt.Errorf("--dial-out %q: expected all or associations among %s", a, strings.Join(ids, ", "))
		}
	}
	for i := range f.Nodes {
		f.Nodes[i].Flight = shift(f.Nodes[i].Flight, o.PortOffset)
		f.Nodes[i].Health = shift(f.Nodes[i].Health, o.PortOffset)
		f.Nodes[i].SQL = shift(f.Nodes[i].SQL, o.PortOffset)
	}
	return f, nil
}

// Setup builds the federation in o.Dir unless a previous run completed it.
func Setup(ctx context.Context, o Options, f *federation.Federation) error {
	if _, err := os.Stat(filepath.Join(o.Dir, doneMarker)); err == nil {
		fmt.Fprintf(o.Out, "reusing the demo federation in %s\n", o.Dir)
		return rewriteAddresses(o, f)
	}
	if entries, err := os.ReadDir(o.Dir); err == nil && len(entries) > 0 {
		fmt.Fprintf(o.Out, "%s holds an unfinished demo: starting it over\n", o.Dir)
		if err := os.RemoveAll(o.Dir); err != nil {
			return err
		}
	}
	step := func(msg string) { fmt.Fprintf(o.Out, "  %s\n", msg) }
	fmt.Fprintf(o.Out, "building a demo federation of %d associations in %s (synthetic data only)\n", len(f.Nodes), o.Dir)
	for _, d := range []string{"pki", "keys", "catalog", "exports", "nodes", "coordinator"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o750); err != nil {
			return err
		}
	}
	step("federation CA and certificates")
	ca, err := mtls.NewCA("Samsyn demo federation CA", 365*24*time.Hour)
	if err != nil {
		return err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	if err := mtls.WriteFiles(filepath.Join(o.Dir, "pki", "ca.pem"), ca.PEM, filepath.Join(o.Dir, "pki", "ca-key.pem"), caKey); err != nil {
		return err
	}
	issue := func(name, identity string) error {
		leaf, err := ca.Issue(identity, []string{"127.0.0.1", "localhost"}, 365*24*time.Hour)
		if err != nil {
			return err
		}
		return mtls.WriteFiles(filepath.Join(o.Dir, "pki", name+".pem"), leaf.CertPEM, filepath.Join(o.Dir, "pki", name+"-key.pem"), leaf.KeyPEM)
	}
	if err := issue("coordinator", mtls.CoordinatorIdentity(f.Coordinator.ID)); err != nil {
		return err
	}
	step("signing keys: catalog authority, coordinator tickets, one data owner per association")
	key := func(name string) error {
		_, err := keyfile.Generate(filepath.Join(o.Dir, "keys", name+".key"), filepath.Join(o.Dir, "keys", name+".pub"))
		return err
	}
	for _, k := range []string{"catalog-authority", "coordinator"} {
		if err := key(k); err != nil {
			return err
		}
	}
	step("the catalog, signed by the catalog authority")
	catDir := filepath.Join(o.Dir, "catalog")
	if err := queries.WriteEmbedded(catDir); err != nil {
		return err
	}
	cat, err := queries.LoadDir(catDir)
	if err != nil {
		return err
	}
	pluginDir := o.Plugins
	if pluginDir == "" && o.Binary != "" {
		pluginDir = filepath.Dir(o.Binary)
	}
	if pluginDir == "" {
		if exe, err := os.Executable(); err == nil {
			pluginDir = filepath.Dir(exe)
		}
	}
	if ids, err := cat.Pin(pluginDir, true); err != nil {
		step(fmt.Sprintf("analyses left unpinned, the nodes will refuse them: %v", err))
	} else {
		step(fmt.Sprintf("%d analyses pinned to the plugin builds in %s", len(ids), pluginDir))
	}
	authKey, err := keyfile.LoadPrivate(filepath.Join(o.Dir, "keys", "catalog-authority.key"))
	if err != nil {
		return err
	}
	if err := queries.WriteSignatures(catDir, queries.Sign(cat, authKey, time.Now())); err != nil {
		return err
	}
	step(fmt.Sprintf("synthetic exports: %d participants, seed %d", o.Participants, o.Seed))
	if _, err := synth.Write(ctx, filepath.Join(o.Dir, "exports"), synth.Options{Participants: o.Participants, Seed: o.Seed, Format: "csv"}); err != nil {
		return err
	}
	for _, n := range f.Nodes {
		if err := issue("node-"+n.Association, mtls.NodeIdentity(n.Association)); err != nil {
			return err
		}
		if err := key(n.Association); err != nil {
			return err
		}
		if err := setupNode(ctx, o, n); err != nil {
			return fmt.Errorf("node %s: %w", n.Association, err)
		}
		step("node " + n.Association + ": store created and exports imported")
	}
	creds, err := writeCoordinator(o, f)
	if err != nil {
		return err
	}
	if err := writeJSON0600(filepath.Join(o.Dir, "credentials.json"), creds); err != nil {
		return err
	}
	if err := rewriteAddresses(o, f); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.Dir, doneMarker), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644)
}

func setupNode(ctx context.Context, o Options, n federation.Node) error {
	dir := filepath.Join(o.Dir, "nodes", n.Association)
	cfg, err := config.Scaffold(dir, n.Association)
	if err != nil {
		return err
	}
	secret, err := cfg.ReadSecret()
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.StorePath())
	if err != nil {
		return err
	}
	defer st.Close()
	im := importer.New(st, o.Logger, prometheus.NewRegistry())
	for _, table := range schemas.V1().TableNames() {
		file := filepath.Join(o.Dir, "exports", n.Association, table+".csv")
		if _, err := im.Import(ctx, importer.Options{Table: table, Files: []string{file}, Association: n.Association, Secret: secret}); err != nil {
			return err
		}
	}
	return nil
}

// aggregationKeys derives every demo node's public aggregation key from its secret, for the
// peers every node pins (in a real federation each operator runs samsyn node aggregation-key
// and the keys are exchanged with the federation's configuration).
func aggregationKeys(o Options, f *federation.Federation) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range f.Nodes {
		secret, err := config.ReadSecret(filepath.Join(o.Dir, "nodes", n.Association, "secret"))
		if err != nil {
			return nil, err
		}
		k, err := secagg.DeriveKey(secret)
		if err != nil {
			return nil, err
		}
		out[n.Association] = secagg.PublicHex(k.PublicKey())
	}
	return out, nil
}

// nodeConfig is the node.yaml the demo writes (paths relative to the node's folder).
func nodeConfig(o Options, f *federation.Federation, n federation.Node, peers map[string]string) string {
	var agg strings.Builder
	agg.WriteString("# Secure aggregation: every association's public key, pinned. Pooled releases sum these\n")
	agg.WriteString("# nodes' masked cells; this node joins cohorts of at least min_cohort associations.\n")
	agg.WriteString("aggregation:\n  min_cohort: 3\n  max_cohorts: 2\n  peers:\n")
	for _, m := range f.Nodes {
		fmt.Fprintf(&agg, "    %s: %s\n", m.Association, peers[m.Association])
	}
	listen, dial := "listen: "+n.Flight+"\n", ""
	if o.dialsOut(n.Association) {
		listen = "# No inbound port: this node dials out to the coordinator (coordinator.dial).\n"
		dial = "  dial: " + f.Coordinator.Tunnel + "\n"
	}
	return fmt.Sprintf(`# Demo node for %[1]s (synthetic data). Paths are relative to this file.
association: %[1]s
store: store.duckdb
secret_file: secret
audit_log: audit.log
%[6]shealth_listen: %[3]s
sql: {listen: "%[5]s", token_file: sql-token}
tls: {ca: ../../pki/ca.pem, cert: ../../pki/node-%[1]s.pem, key: ../../pki/node-%[1]s-key.pem}
coordinator:
  identity: %[4]s
%[7]s  ticket_keys: [../../keys/coordinator.pub]
catalog: {dir: ../../catalog, authority_key: ../../keys/catalog-authority.pub}
association_key: ../../keys/%[1]s.pub
query: {timeout: 30s, memory_limit: 256MB, max_concurrent: 4, threads: %[8]d}
# Deny by default: the node answers only the queries listed here ("*": every signed entry).
allowed_queries: ["*"]
`, n.Association, n.Flight, n.Health, mtls.CoordinatorIdentity(f.Coordinator.ID), n.SQL, listen, dial, max(1, runtime.NumCPU()/len(f.Nodes))) + agg.String()
}

// rewriteAddresses writes the node and coordinator configs for this run's addresses.
func rewriteAddresses(o Options, f *federation.Federation) error {
	peers, err := aggregationKeys(o, f)
	if err != nil {
		return err
	}
	for _, n := range f.Nodes {
		if err := os.WriteFile(filepath.Join(o.Dir, "nodes", n.Association, config.FileName), []byte(nodeConfig(o, f, n, peers)), 0o640); err != nil {
			return err
		}
	}
	cfg := fmt.Sprintf(`# Demo coordinator (synthetic data). Paths are relative to this file.
id: %s
listen: %s
metrics_listen: %s
nodes_tls: {ca: ../pki/ca.pem, cert: ../pki/coordinator.pem, key: ../pki/coordinator-key.pem}
ticket_key: ../keys/coordinator.key
catalog: {dir: ../catalog, authority_key: ../keys/catalog-authority.pub}
store: coordinator.sqlite
audit_log: audit.log
tokens_file: tokens.yaml
fanout: {node_timeout: 10s, retries: 2, backoff: 200ms}
standing_every: 10s
`, f.Coordinator.ID, f.Coordinator.HTTP, f.Coordinator.Metrics)
	if o.anyDialsOut(f) {
		cfg += "tunnel_listen: " + f.Coordinator.Tunnel + "   # nodes that dial out connect here\n"
	}
	cfg += "nodes:\n"
	for _, n := range f.Nodes {
		if o.dialsOut(n.Association) {
			cfg += fmt.Sprintf("  - {association: %s, dial_out: true, identity: %s, approval_key: ../keys/%s.pub, planned_participants: %d}\n", n.Association, mtls.NodeIdentity(n.Association), n.Association, n.Planned)
			continue
		}
		cfg += fmt.Sprintf("  - {association: %s, address: %s, identity: %s, approval_key: ../keys/%s.pub, planned_participants: %d}\n", n.Association, n.Flight, mtls.NodeIdentity(n.Association), n.Association, n.Planned)
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "coordinator", "coordinator.yaml"), []byte(cfg), 0o640); err != nil {
		return err
	}
	credPath := filepath.Join(o.Dir, "credentials.json")
	raw, err := os.ReadFile(credPath)
	if err != nil {
		return err
	}
	var c Credentials
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	c.Coordinator = "http://" + f.Coordinator.HTTP
	return writeJSON0600(credPath, c)
}

// writeCoordinator creates the tokens (one per role) and returns the credentials.
func writeCoordinator(o Options, f *federation.Federation) (*Credentials, error) {
	creds := &Credentials{Coordinator: "http://" + f.Coordinator.HTTP, Tokens: map[string]string{}, AssociationKeys: map[string]string{}}
	roles := []string{"admin", "steering", "evaluator"}
	for _, n := range f.Nodes {
		roles = append(roles, "association:"+n.Association)
		abs, _ := filepath.Abs(filepath.Join(o.Dir, "keys", n.Association+".key"))
		creds.AssociationKeys[n.Association] = abs
	}
	users := "# API users of the demo: name, role and the SHA-256 of the bearer token.\n"
	for _, role := range roles {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		token := "ssy_" + base64.RawURLEncoding.EncodeToString(b)
		creds.Tokens[role] = token
		sum := sha256.Sum256([]byte(token))
		name := "demo-" + role
		users += fmt.Sprintf("- {name: %q, role: %q, sha256: %s}\n", name, role, hex.EncodeToString(sum[:]))
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "coordinator", "tokens.yaml"), []byte(users), 0o600); err != nil {
		return nil, err
	}
	return creds, nil
}

func writeJSON0600(path string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(raw, '\n'), 0o600)
}
