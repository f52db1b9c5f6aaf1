package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/fanout"
	"github.com/samsyn/samsyn/coordinator/nodeclient"
	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/node"
	"github.com/samsyn/samsyn/node/config"
	"github.com/samsyn/samsyn/node/importer"
	"github.com/samsyn/samsyn/node/nodetest"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/audit"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/secagg"
	"github.com/samsyn/samsyn/queries/wire"
	"github.com/samsyn/samsyn/queries/wire/mtls"
	"github.com/samsyn/samsyn/queries/wire/tunnel"
	"github.com/samsyn/samsyn/schemas"
	"github.com/samsyn/samsyn/schemas/synth"
)

// inproc is a federation of real node servers and a coordinator in this process.
type inproc struct {
	waitFor    time.Duration // how long wait gives a study
	dir        string
	signatures queries.Signatures
	ticket     ed25519.PrivateKey
	coord      *coordinator.Coordinator
	store      *state.Store
	assocKeys  map[string]ed25519.PrivateKey
	stopNode   map[string]func()
	// tunnels are the cuttable links of the dial-out nodes to the coordinator.
	tunnels map[string]*proxy
}

// inprocOptions shape a federation: perNode and onlyAssoc as startInProc's, dialOut the
// associations whose nodes dial out (through a proxy the test can cut) instead of listening.
type inprocOptions struct {
	perNode   int
	onlyAssoc []string
	dialOut   []string
	noCache   bool // nodes run every query (query.cache: 0): cold figures
	// pooled, if set, is a DuckDB file (with the store's schema) that receives a copy of every
	// node's rows: the same data in one database, for plain comparisons.
	pooled string
	// slow, for nodes of a million participants sharing two cores: the coordinator waits up
	// to ten minutes for a node (not 5 s) and each node lets a query run as long.
	slow bool
}

// startInProc runs a federation in this process: real node servers on loopback with mutual
// TLS, real stores, a real coordinator. perNode participants per association come from
// nodetest.Seed; perNode 0 imports the demo's synthetic exports instead (1,900 participants,
// seed 1, associations of their real relative sizes).
func startInProc(t testing.TB, perNode int, onlyAssoc ...string) *inproc {
	t.Helper()
	return startFederation(t, inprocOptions{perNode: perNode, onlyAssoc: onlyAssoc})
}

func startFederation(t testing.TB, o inprocOptions) *inproc {
	t.Helper()
	perNode, onlyAssoc := o.perNode, o.onlyAssoc
	f := &inproc{waitFor: 60 * time.Second, dir: t.TempDir(), assocKeys: map[string]ed25519.PrivateKey{}, stopNode: map[string]func(){}, tunnels: map[string]*proxy{}}
	ca, err := mtls.NewCA("e2e", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(f.dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	leafFiles := func(name, identity string) mtls.Files {
		leaf, err := ca.Issue(identity, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		fs := mtls.Files{CA: caFile, Cert: filepath.Join(f.dir, name+".pem"), Key: filepath.Join(f.dir, name+"-key.pem")}
		if err := mtls.WriteFiles(fs.Cert, leaf.CertPEM, fs.Key, leaf.KeyPEM); err != nil {
			t.Fatal(err)
		}
		return fs
	}
	coordFiles := leafFiles("coordinator", mtls.CoordinatorIdentity("region"))
	authPub, authKey, _ := ed25519.GenerateKey(nil)
	ticketPub, ticketKey, _ := ed25519.GenerateKey(nil)

	catDir := filepath.Join(f.dir, "catalog")
	os.MkdirAll(catDir, 0o755)
	files, _ := filepath.Glob("../../queries/catalog/*.yaml")
	if len(files) == 0 {
		t.Fatal("no catalog entries found")
	}
	for _, p := range files {
		raw, _ := os.ReadFile(p)
		os.WriteFile(filepath.Join(catDir, filepath.Base(p)), raw, 0o644)
	}
	cat, err := queries.LoadDir(catDir)
	if err != nil {
		t.Fatal(err)
	}
	plugins := nodetest.Plugins(t)
	if _, err := cat.Pin(plugins, true); err != nil {
		t.Fatal(err)
	}
	sigs := queries.Sign(cat, authKey, time.Now())
	queries.WriteSignatures(catDir, sigs)
	f.signatures, f.ticket = sigs, ticketKey

	assocList, _ := schemas.V1().CodeList("association")
	associations := assocList.Values()
	if len(onlyAssoc) > 0 {
		associations = onlyAssoc
	}
	secretOf := func(assoc string) []byte { return []byte("secret-of-" + assoc + "-0123456789") }
	if perNode <= 0 {
		if _, err := synth.Write(context.Background(), filepath.Join(f.dir, "exports"), synth.Options{Participants: 1900, Seed: 1, Format: "csv"}); err != nil {
			t.Fatal(err)
		}
	}
	var peers strings.Builder
	peers.WriteString("aggregation:\n  min_cohort: 2\n  max_cohorts: 4\n  peers:\n")
	for _, assoc := range associations {
		k, err := secagg.DeriveKey(secretOf(assoc))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&peers, "    %s: %s\n", assoc, secagg.PublicHex(k.PublicKey()))
	}
	var nodes []coordinator.Node
	var hub *tunnel.Hub
	hubAddr := ""
	if len(o.dialOut) > 0 {
		ids := make([]string, len(o.dialOut))
		for i, a := range o.dialOut {
			ids[i] = mtls.NodeIdentity(a)
		}
		hubTLS, err := mtls.ServerConfig(coordFiles, ids...)
		if err != nil {
			t.Fatal(err)
		}
		if hub, err = tunnel.NewHub(hubTLS, ids, slog.New(slog.DiscardHandler), nil); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hubAddr = ln.Addr().String()
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan struct{})
		go func() { defer close(served); _ = hub.Serve(ctx, ln) }()
		t.Cleanup(func() { cancel(); <-served })
	}
	for _, assoc := range associations {
		dialOut := slices.Contains(o.dialOut, assoc)
		nodeDir := filepath.Join(f.dir, "nodes", assoc)
		os.MkdirAll(nodeDir, 0o750)
		nf := leafFiles("node-"+assoc, mtls.NodeIdentity(assoc))
		pub, key, _ := ed25519.GenerateKey(nil)
		f.assocKeys[assoc] = key
		cfgPath := filepath.Join(nodeDir, "node.yaml")
		listen, dial := "listen: 127.0.0.1:0\n", ""
		if dialOut {
			p := startProxy(t, hubAddr)
			f.tunnels[assoc] = p
			listen, dial = "", ", dial: "+p.addr
		}
		// Eight nodes share this machine's cores: each DuckDB gets its share, as an operator
		// running them side by side would set (query.threads).
		threads := max(1, runtime.NumCPU()/len(associations))
		timeout := "30s"
		if o.slow {
			timeout = "10m"
		}
		if o.noCache {
			listen += fmt.Sprintf("query: {cache: 0, threads: %d, timeout: %s}\n", threads, timeout)
		} else {
			listen += fmt.Sprintf("query: {threads: %d, timeout: %s}\n", threads, timeout)
		}
		os.WriteFile(cfgPath, []byte(fmt.Sprintf("association: %s\n%stls: {ca: %s, cert: %s, key: %s}\ncoordinator: {identity: %s, ticket_keys: [x]%s}\ncatalog: {dir: %s, authority_key: x}\nassociation_key: x\nallowed_queries: [\"*\"]\nplugins: {dir: %s}\n%s",
			assoc, listen, caFile, nf.Cert, nf.Key, mtls.CoordinatorIdentity("region"), dial, catDir, plugins, peers.String())), 0o644)
		cfg, err := config.Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		st, err := store.Open(context.Background(), cfg.StorePath())
		if err != nil {
			t.Fatal(err)
		}
		if perNode > 0 {
			nodetest.Seed(t, st.DB(), assoc, perNode)
		} else {
			// The demo federation's data: the synthetic exports, imported as an operator would.
			im := importer.New(st, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			for _, table := range schemas.V1().TableNames() {
				file := filepath.Join(f.dir, "exports", assoc, table+".csv")
				if _, err := im.Import(context.Background(), importer.Options{Table: table, Files: []string{file}, Association: assoc, Secret: secretOf(assoc)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if o.pooled != "" {
			copyInto(t, st, o.pooled)
		}
		st.Close()
		serverTLS, err := mtls.ServerConfig(nf, mtls.CoordinatorIdentity("region"))
		if err != nil {
			t.Fatal(err)
		}
		var dialTLS *tls.Config
		if dialOut {
			if dialTLS, err = mtls.ClientConfig(nf, mtls.CoordinatorIdentity("region")); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		addr := make(chan string, 1)
		done := make(chan error, 1)
		// Stopping a node returns once it has stopped serving, so a test that stops one knows
		// the node is down.
		stop := sync.OnceFunc(func() { cancel(); <-done })
		f.stopNode[assoc] = stop
		go func() {
			done <- node.Serve(ctx, node.Options{Config: cfg, Secret: secretOf(assoc), TLS: serverTLS, DialTLS: dialTLS,
				CatalogKey: authPub, TicketKeys: []ed25519.PublicKey{ticketPub}, AssociationKey: pub,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Listening: func(a string) { addr <- a }})
		}()
		var a string
		select {
		case a = <-addr:
		case err := <-done:
			t.Fatalf("node %s: %v", assoc, err)
		}
		t.Cleanup(stop)
		clientTLS, err := mtls.ClientConfig(coordFiles, mtls.NodeIdentity(assoc))
		if err != nil {
			t.Fatal(err)
		}
		var c *nodeclient.Client
		if dialOut {
			c, err = nodeclient.DialTunnel(assoc, "tunnel/"+assoc, hub.Dialer(mtls.NodeIdentity(assoc)), clientTLS, memory.DefaultAllocator)
		} else {
			c, err = nodeclient.Dial(assoc, a, clientTLS, memory.DefaultAllocator)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		nodes = append(nodes, coordinator.Node{Association: assoc, Client: c, ApprovalKey: pub, Health: c.Healthy, Status: c.Status})
	}
	f.store, err = state.Open(context.Background(), filepath.Join(f.dir, "coordinator", "state.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.store.Close() })
	nodeTimeout := 5 * time.Second
	if o.slow {
		nodeTimeout, f.waitFor = 10*time.Minute, 30*time.Minute
	}
	f.coord, err = coordinator.New(coordinator.Options{ID: "region", Store: f.store, Catalog: cat, Signatures: sigs, Nodes: nodes,
		TicketKey: ticketKey, Policy: disclosure.Defaults(), FanOut: fanout.Options{NodeTimeout: nodeTimeout, Retries: 1, Backoff: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	f.coord.Start(context.Background())
	t.Cleanup(f.coord.Stop)
	return f
}

// copyInto appends every table of st to the DuckDB file at path.
func copyInto(t testing.TB, st *store.Store, path string) {
	t.Helper()
	stmts := []string{"ATTACH " + "'" + strings.ReplaceAll(path, "'", "''") + "' AS pooled"}
	for _, table := range schemas.V1().TableNames() {
		stmts = append(stmts, "INSERT INTO pooled."+table+" SELECT * FROM "+table)
	}
	stmts = append(stmts, "DETACH pooled")
	for _, q := range stmts {
		if _, err := st.DB().Exec(q); err != nil {
			t.Fatalf("copy into %s: %s: %v", path, q, err)
		}
	}
}

func (f *inproc) sigs(*testing.T) queries.Signatures { return f.signatures }

func (f *inproc) ticketKey(*testing.T) ed25519.PrivateKey { return f.ticket }

func (f *inproc) approveAll(t testing.TB, s *study.Study, refusing ...string) {
	t.Helper()
	for _, assoc := range s.Associations {
		a := study.Approval{Association: assoc, Decision: study.Approve, Signatures: study.SignApproval(s, assoc, f.assocKeys[assoc]), Actor: "owner-" + assoc}
		if slices.Contains(refusing, assoc) {
			a = study.Approval{Association: assoc, Decision: study.Refuse, Reason: "e2e: not this time", Actor: "owner-" + assoc}
		}
		if err := f.coord.Decide(context.Background(), s.ID, a); err != nil {
			t.Fatalf("approve %s: %v", assoc, err)
		}
	}
}

func (f *inproc) wait(t testing.TB, id string) *study.Study {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), f.waitFor)
	defer cancel()
	s, err := f.coord.Await(ctx, id)
	if err != nil {
		t.Fatalf("study %s did not finish in %s: %v", id, f.waitFor, err)
	}
	return s
}

func allQueries(cat *queries.Catalog) []study.QueryReq {
	var qs []study.QueryReq
	for _, id := range cat.IDs() {
		if e, _ := cat.Get(id); e.IsAnalysis() {
			continue // analyses_test.go
		}
		qs = append(qs, study.QueryReq{ID: id, Params: map[string]string{"from": "2020-04-01", "to": "2022-09-30"}})
	}
	return qs
}

// groupKeys reads, from a copy of a node's store made by hand-written SQL, the participant
// keys of each group: the oracle for counts and cell keys, independent of the node's SQL.
func groupKeys(t *testing.T, f *inproc, assoc, query string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(f.dir, "nodes", assoc, "store.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "copy.duckdb")
	if err := os.WriteFile(cp, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), cp)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows, err := st.DB().Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var g, k string
		if err := rows.Scan(&g, &k); err != nil {
			t.Fatal(err)
		}
		out[g] = append(out[g], k)
	}
	return out
}

// perturbed is a node's perturbed count of a group, from its secret and the keys.
func perturbed(assoc string, keys []string) int64 {
	var ck uint32
	for _, k := range keys {
		ck += disclosure.RecordKey([]byte("secret-of-"+assoc+"-0123456789"), k)
	}
	return disclosure.Defaults().PTable().Perturb(int64(len(keys)), ck)
}

func TestInProcessFederationReleasesProtectedSumsOfTheNodesPerturbedCells(t *testing.T) {
	f := startInProc(t, 400)
	ctx := context.Background()
	s, err := f.coord.Submit(ctx, &study.Request{Title: "Alla frågor", Purpose: "e2e", Queries: allQueries(f.coord.Catalog()), OnNodeFailure: study.OnFailureFail}, "evaluator")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, s)
	results := f.released(t, s)
	// The oracle: per referral party (a margin every association fills) the sum of the
	// nodes' perturbed counts; per association (a cell only that association fills) its own
	// perturbed count, suppressed where its true count is small.
	const period = "BETWEEN DATE '2020-04-01' AND DATE '2022-09-30'"
	byParty := map[string]int64{}
	byAssoc := map[string]int64{}
	for _, assoc := range f.coord.Federation() {
		for g, keys := range groupKeys(t, f, assoc, `SELECT DISTINCT p.referral_party, p.participant_key FROM participant p
			JOIN episode e USING (participant_key) WHERE e.exit_date `+period) {
			byParty[g] += perturbed(assoc, keys)
		}
		for _, keys := range groupKeys(t, f, assoc, `SELECT DISTINCT p.association, p.participant_key FROM participant p
			JOIN episode e USING (participant_key) WHERE e.exit_date `+period) {
			if v := perturbed(assoc, keys); len(keys) >= 5 && v >= 5 {
				byAssoc[assoc] = v
			}
		}
	}
	checked := 0
	for _, r := range results {
		rel, err := coordinator.Decode(r.Release)
		if err != nil {
			t.Fatal(err)
		}
		e, _ := f.coord.Catalog().Get(r.QueryID)
		tbl := readTable(t, e, rel)
		for i := 0; i < tbl.Len(); i++ {
			k, c := tbl.Key(i), tbl.Cell(i)
			if c.N != nil && *c.N > 0 && *c.N < 5 {
				t.Fatalf("%s %s: small released cell %d", r.QueryID, k, *c.N)
			}
			var want int64 = -1
			switch {
			case r.QueryID == "outcome_by_referral_party" && strings.HasSuffix(k, "|_total") && !strings.HasPrefix(k, "_"):
				want = byParty[strings.TrimSuffix(k, "|_total")]
			case r.QueryID == "exits_by_association" && strings.HasSuffix(k, "|_total") && !strings.HasPrefix(k, "_"):
				want = byAssoc[strings.TrimSuffix(k, "|_total")]
			}
			switch {
			case want < 0:
			case want < 5 && !c.Suppressed:
				t.Fatalf("%s %s: released %v, the oracle says suppressed (%d)", r.QueryID, k, c.N, want)
			case want >= 5 && c.Suppressed && r.QueryID == "outcome_by_referral_party":
				// a secondary suppression may hide a margin's part; never an association's row
			case want >= 5 && (c.Suppressed || c.N == nil || *c.N != want):
				t.Fatalf("%s %s: released %v, the oracle says %d", r.QueryID, k, c.N, want)
			default:
				checked++
			}
		}
		rel.Release()
	}
	if checked < 6+8 {
		t.Fatalf("only %d cells checked against the oracle", checked)
	}
	// What the coordinator stored of each node is masked: no slot of a contribution is a
	// plausible count.
	dispatches, _ := f.store.Dispatches(ctx, s.ID)
	for _, d := range dispatches {
		rec, err := coordinator.Decode(d.Release)
		if err != nil {
			t.Fatal(err)
		}
		col, ok := rec.Column(0).(*array.Uint64)
		if !ok {
			t.Fatalf("dispatch %s/%d stored %s, not a masked vector", d.Association, d.QueryIndex, rec.Schema())
		}
		small := 0
		for _, v := range col.Uint64Values() {
			if v < 1<<40 {
				small++
			}
		}
		if small > 2 {
			t.Fatalf("dispatch %s/%d: %d of %d stored values look unmasked", d.Association, d.QueryIndex, small, col.Len())
		}
		rec.Release()
	}
}

// readTable reads a released table of entry e through the contract's reader.
func readTable(t testing.TB, e *queries.Entry, rec arrow.Record) *wire.Table {
	t.Helper()
	tbl, err := e.ReadRelease(rec)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func TestANodeDownGivesAMarkedPartialResultOrAFailure(t *testing.T) {
	f := startInProc(t, 300, "hbs", "varna", "roslagen")
	f.stopNode["varna"]()
	ctx := context.Background()
	q := []study.QueryReq{{ID: "exits_by_association", Params: map[string]string{"from": "2020-04-01", "to": "2022-09-30"}}}
	partial, err := f.coord.Submit(ctx, &study.Request{Title: "p", Purpose: "e2e", Queries: q, OnNodeFailure: study.OnFailurePartial}, "eva")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, partial)
	if s := f.wait(t, partial.ID); s.State != study.Released {
		t.Fatalf("partial study ended %s", s.State)
	}
	res, _ := f.store.Results(ctx, partial.ID)
	var checks coordinator.Checks
	if err := json.Unmarshal(res[0].Checks, &checks); err != nil {
		t.Fatal(err)
	}
	if !checks.Partial || len(checks.Missing) != 1 || checks.Missing[0] != "varna" || len(checks.Associations) != 2 {
		t.Fatalf("partial result not marked: %+v", checks)
	}
	failing, err := f.coord.Submit(ctx, &study.Request{Title: "f", Purpose: "e2e", Queries: q, OnNodeFailure: study.OnFailureFail}, "eva")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, failing)
	if s := f.wait(t, failing.ID); s.State != study.Failed {
		t.Fatalf("fail-policy study ended %s", s.State)
	}
}

// hangingNode accepts a request and never answers: a failure mode a real node cannot be
// made to show on demand.
type hangingNode struct{}

func (hangingNode) Get(ctx context.Context, _ []byte) (*nodeclient.Release, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestAHangingNodeMeetsTheDeadline(t *testing.T) {
	f := startInProc(t, 300, "hbs", "roslagen")
	nodes := f.coord.Nodes()
	nodes[1].Client = hangingNode{}
	cat := f.coord.Catalog()
	f.coord.Stop()
	c, err := coordinator.New(coordinator.Options{Store: f.store, Catalog: cat, Signatures: f.sigs(t), Nodes: nodes,
		TicketKey: f.ticketKey(t), Policy: disclosure.Defaults(), FanOut: fanout.Options{NodeTimeout: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	c.Start(context.Background())
	defer c.Stop()
	f.coord = c
	s, err := c.Submit(context.Background(), &study.Request{Title: "h", Purpose: "e2e", OnNodeFailure: study.OnFailurePartial,
		Queries: []study.QueryReq{{ID: "exits_by_association", Params: map[string]string{"from": "2020-04-01", "to": "2022-09-30"}}}}, "eva")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f.approveAll(t, s)
	if got := f.wait(t, s.ID); got.State != study.Released || time.Since(start) > 10*time.Second {
		t.Fatalf("study %s after %s", got.State, time.Since(start))
	}
	if p := c.Progress(s.ID)["roslagen"]; p.State != "failed" {
		t.Fatalf("progress of the hanging node: %+v", p)
	}
	// The cohort shrank to hbs alone: hbs's own table, in which Roslagen's row is missing,
	// not a zero.
	res, _ := f.store.Results(context.Background(), s.ID)
	rel, err := coordinator.Decode(res[0].Release)
	if err != nil {
		t.Fatal(err)
	}
	defer rel.Release()
	e, _ := cat.Get("exits_by_association")
	tbl := readTable(t, e, rel)
	seen := 0
	for i := 0; i < tbl.Len(); i++ {
		c := tbl.Cell(i)
		if c.Dims[0] == "roslagen" {
			seen++
			if !c.Missing || c.N != nil {
				t.Fatalf("%s: a cell only the hanging association fills is %+v", tbl.Key(i), c)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no row for Roslagen in the result")
	}
}

// gatedNode holds every request to one node until the context ends: the fault-injection
// hook that keeps a study in flight while the coordinator is stopped, whatever the machine's
// speed. It never reaches the node it stands for.
type gatedNode struct {
	mu    sync.Mutex
	calls int
}

func (g *gatedNode) Get(ctx context.Context, _ []byte) (*nodeclient.Release, error) {
	g.mu.Lock()
	g.calls++
	g.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
}

func (g *gatedNode) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

func TestCoordinatorRestartMidStudyLosesNothingAndAsksNoNodeTwice(t *testing.T) {
	f := startInProc(t, 300)
	ctx := context.Background()
	real := f.coord.Nodes()
	gated := append([]coordinator.Node(nil), real...)
	gate := &gatedNode{}
	for i := range gated {
		if gated[i].Association == "roslagen" {
			gated[i].Client = gate
		}
	}
	f.coord.Stop()
	newCoord := func(nodes []coordinator.Node) *coordinator.Coordinator {
		c, err := coordinator.New(coordinator.Options{Store: f.store, Catalog: f.coord.Catalog(), Signatures: f.sigs(t), Nodes: nodes,
			TicketKey: f.ticketKey(t), Policy: disclosure.Defaults(), FanOut: fanout.Options{NodeTimeout: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		c.Start(ctx)
		return c
	}
	first := newCoord(gated)
	f.coord = first
	s := f.runAll(t, study.OnFailurePartial)
	// Wait until the seven other nodes' answers to the first query are stored, while
	// Roslagen's request is held.
	deadline := time.Now().Add(60 * time.Second)
	for {
		ds, _ := f.store.Dispatches(ctx, s.ID)
		if len(ds) >= 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d answers stored in 60 s", len(ds))
		}
		time.Sleep(5 * time.Millisecond)
	}
	first.Stop() // the coordinator goes away mid-study
	if st, _ := f.store.Study(ctx, s.ID); st.State.Final() {
		t.Fatalf("the study ended %s while a node was held", st.State)
	}
	second := newCoord(real)
	defer second.Stop()
	f.coord = second
	if got := f.wait(t, s.ID); got.State != study.Released {
		t.Fatalf("after restart the study ended %s", got.State)
	}
	for assoc := range f.assocKeys {
		counts := releasesInAudit(t, filepath.Join(f.dir, "nodes", assoc, "audit.log"), s.ID)
		for q, n := range counts {
			if n != 1 {
				t.Errorf("node %s released %s %d times", assoc, q, n)
			}
		}
		if len(counts) != len(s.Queries) {
			t.Errorf("node %s released %d of %d queries", assoc, len(counts), len(s.Queries))
		}
	}
	res, _ := f.store.Results(ctx, s.ID)
	for _, r := range res {
		var ch coordinator.Checks
		json.Unmarshal(r.Checks, &ch)
		if ch.Partial || len(ch.Associations) != 8 {
			t.Fatalf("%s after the restart: %+v", r.QueryID, ch)
		}
	}
}

// TestAHungNodeCostsAStudyOneDeadlineNotOnePerQuery: a node that never answers is asked once;
// the study's later queries leave it out (its health probe fails too) and mark it missing.
func TestAHungNodeCostsAStudyOneDeadlineNotOnePerQuery(t *testing.T) {
	f := startInProc(t, 300, "hbs", "varna", "roslagen")
	nodes := f.coord.Nodes()
	gate := &gatedNode{}
	for i := range nodes {
		if nodes[i].Association == "roslagen" {
			nodes[i].Client = gate
			nodes[i].Health = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
		}
	}
	cat := f.coord.Catalog()
	f.coord.Stop()
	c, err := coordinator.New(coordinator.Options{Store: f.store, Catalog: cat, Signatures: f.sigs(t), Nodes: nodes,
		TicketKey: f.ticketKey(t), Policy: disclosure.Defaults(), FanOut: fanout.Options{NodeTimeout: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	c.Start(context.Background())
	defer c.Stop()
	f.coord = c
	var qs []study.QueryReq
	for _, id := range []string{"exits_by_association", "outcome_by_method", "outcome_by_gender_age", "inflow_by_quarter", "exits_by_quarter", "outcome_by_education"} {
		qs = append(qs, study.QueryReq{ID: id, Params: map[string]string{"from": "2020-04-01", "to": "2022-09-30"}})
	}
	s, err := c.Submit(context.Background(), &study.Request{Title: "h", Purpose: "e2e", OnNodeFailure: study.OnFailurePartial, Queries: qs}, "eva")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, s)
	if got := f.wait(t, s.ID); got.State != study.Released {
		t.Fatalf("study %s", got.State)
	}
	if n := gate.count(); n != 1 {
		t.Fatalf("the hung node was asked %d times in a study of %d queries, want once", n, len(qs))
	}
	res, _ := f.store.Results(context.Background(), s.ID)
	if len(res) != len(qs) {
		t.Fatalf("%d results for %d queries", len(res), len(qs))
	}
	for _, r := range res {
		var ch coordinator.Checks
		json.Unmarshal(r.Checks, &ch)
		if !slices.Contains(ch.Missing, "roslagen") || len(ch.Associations) != 2 {
			t.Fatalf("%s: %+v", r.QueryID, ch)
		}
	}
}

func releasesInAudit(t *testing.T, path, studyID string) map[string]int {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e audit.Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		if (e.Action == "release" || e.Action == "contribute") && e.Fields["study"] == studyID {
			out[e.Fields["query"]]++
		}
	}
	return out
}

// killAfterFirst passes the first request to the real node and kills that node just before
// the second: the fault-injection hook that makes "killed mid-study" happen on every machine.
// From then on it answers as a connection to a dead process does (Unavailable), without
// waiting for the server's shutdown to take effect.
type killAfterFirst struct {
	real  fanout.Node
	kill  func()
	mu    sync.Mutex
	calls int
}

func (k *killAfterFirst) Get(ctx context.Context, ticket []byte) (*nodeclient.Release, error) {
	k.mu.Lock()
	k.calls++
	n := k.calls
	if n == 2 {
		k.kill()
	}
	k.mu.Unlock()
	if n >= 2 {
		return nil, status.Error(codes.Unavailable, "connection refused: the node was killed")
	}
	return k.real.Get(ctx, ticket)
}

func TestANodeKilledMidStudyIsMarkedMissing(t *testing.T) {
	f := startInProc(t, 300, "hbs", "varna", "roslagen")
	ctx := context.Background()
	nodes := f.coord.Nodes()
	for i := range nodes {
		if nodes[i].Association == "varna" {
			nodes[i].Client = &killAfterFirst{real: nodes[i].Client, kill: f.stopNode["varna"]}
		}
	}
	f.coord.Stop()
	c, err := coordinator.New(coordinator.Options{Store: f.store, Catalog: f.coord.Catalog(), Signatures: f.sigs(t), Nodes: nodes,
		TicketKey: f.ticketKey(t), Policy: disclosure.Defaults(), FanOut: fanout.Options{NodeTimeout: 5 * time.Second, Retries: 1, Backoff: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	c.Start(ctx)
	defer c.Stop()
	f.coord = c
	s := f.runAll(t, study.OnFailurePartial)
	if got := f.wait(t, s.ID); got.State != study.Released {
		t.Fatalf("study ended %s", got.State)
	}
	results, _ := f.store.Results(ctx, s.ID)
	partial := 0
	for _, r := range results {
		var ch coordinator.Checks
		json.Unmarshal(r.Checks, &ch)
		if ch.Partial {
			if len(ch.Missing) != 1 || ch.Missing[0] != "varna" {
				t.Fatalf("%s: missing %v", r.QueryID, ch.Missing)
			}
			partial++
		}
	}
	// Varna answered the first query; it was killed before the second, so every later query
	// is released without it, and says so.
	if partial != len(results)-1 {
		t.Fatalf("%d of %d results are marked partial, want all but the first", partial, len(results))
	}
}

// runAll submits a study of every catalog query and approves it for every association.
// released waits for s, requires it released, and returns its result per query.
func (f *inproc) released(t testing.TB, s *study.Study) []state.Result {
	t.Helper()
	ctx := context.Background()
	if done := f.wait(t, s.ID); done.State != study.Released {
		tr, _ := f.store.Transitions(ctx, s.ID)
		t.Fatalf("study ended %s: %+v", done.State, tr)
	}
	results, err := f.store.Results(ctx, s.ID)
	if err != nil || len(results) != len(s.Queries) {
		t.Fatalf("%d results for %d queries: %v", len(results), len(s.Queries), err)
	}
	return results
}

func (f *inproc) runAll(t *testing.T, onFailure string) *study.Study {
	t.Helper()
	s, err := f.coord.Submit(context.Background(), &study.Request{Title: "all", Purpose: "e2e", Queries: allQueries(f.coord.Catalog()), OnNodeFailure: onFailure}, "eva")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, s)
	return s
}

// waitForFirstDispatch waits (at most 30 s) until some node has answered some query.

func TestACohortOutsidePolicyIsRefusedAtEveryNode(t *testing.T) {
	f := startInProc(t, 50, "hbs", "varna", "roslagen")
	ctx := context.Background()
	e, _ := f.coord.Catalog().Get("exits_by_association")
	params := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	for _, n := range f.coord.Nodes() {
		// stockholm has no pinned aggregation key in this federation.
		cohort := []string{n.Association, "stockholm"}
		slices.Sort(cohort)
		nonce, _ := wire.NewNonce()
		raw, err := wire.Sign(wire.Ticket{StudyID: "s-outside", QueryID: e.ID, QueryHash: e.Hash(), Params: params,
			CatalogSignature: f.signatures.Signature(e.ID), Association: n.Association,
			Approval: ed25519.Sign(f.assocKeys[n.Association], wire.ApprovalMessage("s-outside", n.Association, e.ID, e.Hash(), params)),
			Cohort:   cohort, Round: 1, Nonce: nonce, NotBefore: time.Now().Add(-time.Second), Expires: time.Now().Add(time.Minute)}, f.ticket)
		if err != nil {
			t.Fatal(err)
		}
		_, err = n.Client.Get(ctx, raw)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "cohort") {
			t.Fatalf("node %s answered a cohort outside its policy: %v", n.Association, err)
		}
		raw2, _ := os.ReadFile(filepath.Join(f.dir, "nodes", n.Association, "audit.log"))
		if !strings.Contains(string(raw2), `"reason":"cohort"`) {
			t.Fatalf("node %s did not audit the refusal", n.Association)
		}
	}
}

// TestPooledCellsWithSmallPartsAtEveryNodeAreReleased: in one quarter, each association
// has only a few exits per referral party and outcome, fewer than 5 almost everywhere, so
// per-node suppression would hide nearly every cell; pooled, they are released, each equal
// to the sum of the nodes' perturbed parts (the oracle: hand-written SQL over copies of the
// nodes' stores, the record keys and the ptable).
func TestPooledCellsWithSmallPartsAtEveryNodeAreReleased(t *testing.T) {
	f := startInProc(t, 400)
	ctx := context.Background()
	params := map[string]string{"from": "2021-07-01", "to": "2021-09-30"}
	s, err := f.coord.Submit(ctx, &study.Request{Title: "Kvartal", Purpose: "e2e", OnNodeFailure: study.OnFailureFail,
		Queries: []study.QueryReq{{ID: "outcome_by_referral_party", Params: params}}}, "evaluator")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, s)
	if done := f.wait(t, s.ID); done.State != study.Released {
		t.Fatalf("study ended %s", done.State)
	}
	want := map[string]int64{}
	small := map[string]bool{}
	for _, assoc := range f.coord.Federation() {
		for g, keys := range groupKeys(t, f, assoc, `SELECT DISTINCT p.referral_party || '|' || coalesce(e.outcome, '_other'), p.participant_key
			FROM participant p JOIN episode e USING (participant_key) WHERE e.exit_date BETWEEN DATE '2021-07-01' AND DATE '2021-09-30'`) {
			want[g] += perturbed(assoc, keys)
			if _, seen := small[g]; !seen {
				small[g] = true
			}
			small[g] = small[g] && len(keys) < 5
		}
	}
	res, err := f.store.Results(ctx, s.ID)
	if err != nil || len(res) != 1 {
		t.Fatalf("results: %v", err)
	}
	rel, err := coordinator.Decode(res[0].Release)
	if err != nil {
		t.Fatal(err)
	}
	defer rel.Release()
	e, _ := f.coord.Catalog().Get("outcome_by_referral_party")
	tbl := readTable(t, e, rel)
	released := 0
	for i := 0; i < tbl.Len(); i++ {
		k, c := tbl.Key(i), tbl.Cell(i)
		w, ok := want[k]
		if !ok || !small[k] {
			continue
		}
		switch {
		case w >= 5 && c.Suppressed:
			// a secondary suppression, protecting a small neighbour
		case w >= 5 && (c.N == nil || *c.N != w):
			t.Fatalf("%s: every node's part is below 5, pooled %d, released %v", k, w, c.N)
		case w < 5 && !c.Suppressed:
			t.Fatalf("%s: pooled %d released", k, w)
		case w >= 5:
			released++
		}
	}
	if released < 10 {
		t.Fatalf("only %d cells with small parts at every node were released", released)
	}
	t.Logf("%d cells with parts below 5 at every node released pooled", released)

	// The same query again, in another study with fresh masks: the same release, cell for
	// cell, so repeating a query averages no noise away.
	again, err := f.coord.Submit(ctx, &study.Request{Title: "Kvartal igen", Purpose: "e2e", OnNodeFailure: study.OnFailureFail,
		Queries: []study.QueryReq{{ID: "outcome_by_referral_party", Params: params}}}, "evaluator")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, again)
	if done := f.wait(t, again.ID); done.State != study.Released {
		t.Fatalf("second study ended %s", done.State)
	}
	res2, _ := f.store.Results(ctx, again.ID)
	rel2, err := coordinator.Decode(res2[0].Release)
	if err != nil {
		t.Fatal(err)
	}
	defer rel2.Release()
	tbl2 := readTable(t, e, rel2)
	if tbl2.Len() != tbl.Len() {
		t.Fatalf("the repeat has %d cells, the first %d", tbl2.Len(), tbl.Len())
	}
	for i := 0; i < tbl.Len(); i++ {
		a, b := tbl.Cell(i), tbl2.Cell(i)
		if tbl.Key(i) != tbl2.Key(i) || a.Suppressed != b.Suppressed || (a.N == nil) != (b.N == nil) || a.N != nil && *a.N != *b.N {
			t.Fatalf("%s differs between two runs of the same query", tbl.Key(i))
		}
	}
}
