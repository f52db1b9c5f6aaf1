package node

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/samsyn/samsyn/node/config"
	"github.com/samsyn/samsyn/node/nodetest"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/audit"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/wire"
	"github.com/samsyn/samsyn/queries/wire/mtls"
)

// federation is one node served for real, and the keys and certificates around it.
type federation struct {
	alloc                         *memory.CheckedAllocator
	foreignTLS                    mtls.Files
	dir                           string
	addr                          string
	catalog                       *queries.Catalog
	sigs                          queries.Signatures
	ticketKey, assocKey, otherKey ed25519.PrivateKey
	coordTLS, intruderTLS         mtls.Files
	cfg                           *config.Config
	reg                           *prometheus.Registry // the running node's metrics
	serve                         func(t *testing.T)   // starts the node (again) on a new port
	stop                          func(t *testing.T)   // stops it
}

func issue(t *testing.T, ca *mtls.CA, caFile, dir, name, identity string) mtls.Files {
	t.Helper()
	leaf, err := ca.Issue(identity, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := mtls.Files{CA: caFile, Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	if err := mtls.WriteFiles(f.Cert, leaf.CertPEM, f.Key, leaf.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return f
}

func startNode(t *testing.T) *federation {
	t.Helper()
	f := &federation{dir: t.TempDir()}
	ca, err := mtls.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(f.dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	nodeTLS := issue(t, ca, caFile, f.dir, "node", mtls.NodeIdentity("hbs"))
	f.coordTLS = issue(t, ca, caFile, f.dir, "coord", mtls.CoordinatorIdentity("region"))
	f.intruderTLS = issue(t, ca, caFile, f.dir, "intruder", mtls.NodeIdentity("varna"))
	other, err := mtls.NewCA("another federation", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(f.dir, "other-ca.pem")
	os.WriteFile(otherFile, other.PEM, 0o644)
	f.foreignTLS = issue(t, other, otherFile, f.dir, "foreign", mtls.CoordinatorIdentity("region"))
	f.foreignTLS.CA = caFile // it trusts our CA, but its own certificate comes from another

	authPub, authKey, _ := ed25519.GenerateKey(nil)
	ticketPub, ticketKey, _ := ed25519.GenerateKey(nil)
	assocPub, assocKey, _ := ed25519.GenerateKey(nil)
	_, otherKey, _ := ed25519.GenerateKey(nil)
	f.ticketKey, f.assocKey, f.otherKey = ticketKey, assocKey, otherKey

	catDir := filepath.Join(f.dir, "catalog")
	os.MkdirAll(catDir, 0o755)
	files, _ := filepath.Glob("../queries/catalog/*.yaml")
	if len(files) == 0 {
		t.Fatal("no catalog entries found")
	}
	for _, p := range files {
		raw, _ := os.ReadFile(p)
		os.WriteFile(filepath.Join(catDir, filepath.Base(p)), raw, 0o644)
	}
	f.catalog, err = queries.LoadDir(catDir)
	if err != nil {
		t.Fatal(err)
	}
	f.sigs = queries.Sign(f.catalog, authKey, time.Now())
	if err := queries.WriteSignatures(catDir, f.sigs); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(f.dir, "node.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`association: hbs
listen: 127.0.0.1:0
tls: {ca: %s, cert: %s, key: %s}
coordinator: {identity: samsyn://coordinator/region, ticket_keys: [unused.pub]}
catalog: {dir: catalog, authority_key: unused.pub}
association_key: unused.pub
allowed_queries: [exits_by_municipality, outcome_by_method, exits_by_association]
`, caFile, nodeTLS.Cert, nodeTLS.Key)), 0o644)
	f.cfg, err = config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cfg.ValidateServe(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), f.cfg.StorePath())
	if err != nil {
		t.Fatal(err)
	}
	nodetest.Seed(t, st.DB(), "hbs", 700)
	st.Close()

	serverTLS, err := mtls.ServerConfig(nodeTLS, f.cfg.Coordinator.Identity)
	if err != nil {
		t.Fatal(err)
	}
	f.alloc = memory.NewCheckedAllocator(memory.NewGoAllocator())
	f.serve = func(t *testing.T) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		listening := make(chan string, 1)
		done := make(chan error, 1)
		f.reg = prometheus.NewRegistry()
		go func() {
			done <- Serve(ctx, Options{Config: f.cfg, Secret: []byte("node-secret-0123456789abcdef0123"), TLS: serverTLS,
				CatalogKey: authPub, TicketKeys: []ed25519.PublicKey{ticketPub}, AssociationKey: assocPub, Registerer: f.reg,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Allocator: f.alloc, Listening: func(a string) { listening <- a }})
		}()
		select {
		case f.addr = <-listening:
		case err := <-done:
			t.Fatalf("node did not start: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("node did not start in 30 s")
		}
		stopped := false
		f.stop = func(t *testing.T) {
			if stopped {
				return
			}
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	}
	f.serve(t)
	t.Cleanup(func() {
		f.stop(t)
		f.alloc.AssertSize(t, 0)
	})
	return f
}

// client is a plain Flight client, as any coordinator would hold: the node's tests do not
// import the coordinator.
type client struct {
	conn   *grpc.ClientConn
	flight flight.Client
}

type release struct {
	Table    arrow.Record
	Metadata map[string]string
}

func (f *federation) client(t *testing.T, files mtls.Files) *client {
	t.Helper()
	tlsConf, err := mtls.ClientConfig(files, mtls.NodeIdentity("hbs"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{conn: conn, flight: flight.NewClientFromConn(conn, nil)}
}

func (c *client) Healthy(ctx context.Context) error {
	resp, err := healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		err = fmt.Errorf("status %s", resp.GetStatus())
	}
	return err
}

func (c *client) Get(ctx context.Context, ticket []byte) (*release, error) {
	stream, err := c.flight.DoGet(ctx, &flight.Ticket{Ticket: ticket})
	if err != nil {
		return nil, err
	}
	rd, err := flight.NewRecordReader(stream)
	if err != nil {
		return nil, err
	}
	defer rd.Release()
	if !rd.Next() {
		return nil, fmt.Errorf("no record: %v", rd.Err())
	}
	rec := rd.Record()
	rec.Retain()
	md := map[string]string{}
	for i, k := range rd.Schema().Metadata().Keys() {
		md[k] = rd.Schema().Metadata().Values()[i]
	}
	return &release{Table: rec, Metadata: md}, nil
}

// ticket builds a valid ticket for query id; mutate may spoil it.
func (f *federation) ticket(t *testing.T, id string, mutate func(*wire.Ticket)) []byte {
	t.Helper()
	e, _ := f.catalog.Get(id)
	params := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	tk := wire.Ticket{StudyID: "st-test", QueryID: id, QueryHash: e.Hash(), Params: params, CatalogSignature: f.sigs.Signature(id),
		Association: "hbs", Approval: ed25519.Sign(f.assocKey, wire.ApprovalMessage("st-test", "hbs", id, e.Hash(), params)),
		NotBefore: time.Now().Add(-time.Second), Expires: time.Now().Add(5 * time.Minute)}
	tk.Nonce, _ = wire.NewNonce()
	if mutate != nil {
		mutate(&tk)
	}
	raw, err := wire.Sign(tk, f.ticketKey)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestNodeFlightContract(t *testing.T) {
	f := startNode(t)
	c := f.client(t, f.coordTLS)
	ctx := context.Background()
	if err := c.Healthy(ctx); err != nil {
		t.Fatalf("health: %v", err)
	}

	good := f.ticket(t, "exits_by_municipality", nil)
	rel, err := c.Get(ctx, good)
	if err != nil {
		t.Fatalf("a valid ticket was refused: %v", err)
	}
	tab := rel.Table
	if rel.Metadata[wire.MetaAssociation] != "hbs" || rel.Metadata[wire.MetaQueryID] != "exits_by_municipality" || rel.Metadata[wire.MetaSnapshot] == "" {
		t.Fatalf("provenance: %v", rel.Metadata)
	}
	if tab.Schema().HasField(disclosure.ColCellKey) || tab.Schema().HasField("participant_key") {
		t.Fatal("a key column left the node")
	}
	n := tab.Column(2).(*array.Int64)
	for i := 0; i < int(tab.NumRows()); i++ {
		if !n.IsNull(i) && n.Value(i) > 0 && n.Value(i) < 5 {
			t.Fatalf("a small cell left the node: %d", n.Value(i))
		}
	}
	if tab.NumRows() < 26*5 {
		t.Fatalf("the frame has %d rows, expected every municipality × outcome", tab.NumRows())
	}
	tab.Release()

	refusals := []struct {
		name   string
		ticket []byte
		code   codes.Code
		reason string
	}{
		{"replayed", good, codes.PermissionDenied, "replayed"},
		{"expired", f.ticket(t, "outcome_by_method", func(tk *wire.Ticket) {
			tk.NotBefore, tk.Expires = time.Now().Add(-20*time.Minute), time.Now().Add(-10*time.Minute)
		}), codes.PermissionDenied, "expired"},
		{"other association", f.ticket(t, "outcome_by_method", func(tk *wire.Ticket) { tk.Association = "varna" }), codes.PermissionDenied, "association_mismatch"},
		{"approval by someone else", f.ticket(t, "outcome_by_method", func(tk *wire.Ticket) {
			tk.Approval = ed25519.Sign(f.otherKey, wire.ApprovalMessage("st-test", "hbs", tk.QueryID, tk.QueryHash, tk.Params))
		}), codes.PermissionDenied, "bad_approval"},
		{"approval for other params", f.ticket(t, "outcome_by_method", func(tk *wire.Ticket) { tk.Params = map[string]string{"from": "2021-01-01", "to": "2021-12-31"} }), codes.PermissionDenied, "bad_approval"},
		{"changed query", f.ticket(t, "outcome_by_method", func(tk *wire.Ticket) { tk.QueryHash = strings.Repeat("ab", 32) }), codes.PermissionDenied, "hash_mismatch"},
		{"not allowed by the node", f.ticket(t, "months_in_project", nil), codes.PermissionDenied, "not_allowed"},
		{"parameter outside its domain", f.ticket(t, "outcome_by_method", func(tk *wire.Ticket) {
			tk.Params = map[string]string{"from": "2021-01-02", "to": "2021-12-31"}
			tk.Approval = ed25519.Sign(f.assocKey, wire.ApprovalMessage("st-test", "hbs", tk.QueryID, tk.QueryHash, tk.Params))
		}), codes.InvalidArgument, "bad_params"},
		{"tampered", func() []byte {
			raw := f.ticket(t, "outcome_by_method", nil)
			raw[len(raw)/2] ^= 1
			return raw
		}(), codes.PermissionDenied, ""},
	}
	for _, r := range refusals {
		_, err := c.Get(ctx, r.ticket)
		if status.Code(err) != r.code || !strings.Contains(status.Convert(err).Message(), r.reason) {
			t.Errorf("%s: got %v, want %s %s", r.name, err, r.code, r.reason)
		}
	}

	if _, err := f.client(t, f.intruderTLS).Get(ctx, f.ticket(t, "outcome_by_method", nil)); err == nil {
		t.Fatal("a node certificate was served as the coordinator")
	}
	if _, err := f.client(t, f.foreignTLS).Get(ctx, f.ticket(t, "outcome_by_method", nil)); err == nil {
		t.Fatal("a certificate from another CA was served")
	}
	// Both refusals happened in the TLS handshake: they are counted, not lost. The client can
	// see its handshake fail before the server has finished counting it: wait (boundedly).
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := testutil.ToFloat64(counterVec(t, f.reg, "samsyn_node_tls_handshakes_refused_total"))
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%g refused handshakes counted, want at least 2", n)
		}
		time.Sleep(20 * time.Millisecond)
	}

	results, err := c.flight.DoAction(ctx, &flight.Action{Type: "health"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := results.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var health struct {
		Status, Snapshot, Catalog string
		SchemaVersion             int `json:"schema_version"`
	}
	if err := json.Unmarshal(res.Body, &health); err != nil || health.Status != "serving" || health.Snapshot == "" || health.Catalog == "" || health.SchemaVersion != 1 {
		t.Fatalf("health action: %s %v", res.Body, err)
	}

	n2, err := audit.VerifyFile(f.cfg.Abs(f.cfg.AuditLog))
	if err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	if n2 != int64(1+len(refusals)) {
		t.Fatalf("%d audit entries, want %d (one release, every refusal)", n2, 1+len(refusals))
	}
	raw, _ := os.ReadFile(f.cfg.Abs(f.cfg.AuditLog))
	if strings.Count(string(raw), `"action":"release"`) != 1 || strings.Count(string(raw), `"action":"refuse"`) != len(refusals) {
		t.Fatalf("audit log:\n%s", raw)
	}
}

// TestATicketCannotBeReplayedAcrossARestartAndARepeatIsNotANewRelease: used nonces survive a
// restart (the node replays its audit log), and a second ticket for the same study, query
// and parameters is answered with the same table and audited as a repeat.
func TestATicketCannotBeReplayedAcrossARestartAndARepeatIsNotANewRelease(t *testing.T) {
	f := startNode(t)
	ctx := context.Background()
	good := f.ticket(t, "exits_by_municipality", nil)
	first, err := f.client(t, f.coordTLS).Get(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Table.Release()
	f.stop(t)
	f.serve(t)
	c := f.client(t, f.coordTLS)
	if _, err := c.Get(ctx, good); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("a ticket used before the restart was accepted again: %v", err)
	}
	again, err := c.Get(ctx, f.ticket(t, "exits_by_municipality", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Table.Release()
	n1, n2 := first.Table.Column(2).(*array.Int64), again.Table.Column(2).(*array.Int64)
	if n1.Len() != n2.Len() {
		t.Fatalf("the repeat has %d cells, the first answer %d", n2.Len(), n1.Len())
	}
	for i := 0; i < n1.Len(); i++ {
		if n1.IsNull(i) != n2.IsNull(i) || !n1.IsNull(i) && n1.Value(i) != n2.Value(i) {
			t.Fatalf("cell %d differs in the repeat", i)
		}
	}
	raw, _ := os.ReadFile(f.cfg.Abs(f.cfg.AuditLog))
	if got := strings.Count(string(raw), `"action":"release"`); got != 1 {
		t.Fatalf("%d release entries for one study's query, want 1:\n%s", got, raw)
	}
	if !strings.Contains(string(raw), `"action":"repeat"`) || !strings.Contains(string(raw), `"reason":"replayed"`) {
		t.Fatalf("the repeat or the replay is not in the audit log:\n%s", raw)
	}
}

// counterVec sums every series of a counter family in reg.
func counterVec(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sum"})
	c.Add(sum)
	return c
}
