package e2e

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/samsyn/samsyn/coordinator/fanout"
	"github.com/samsyn/samsyn/coordinator/merge"
	"github.com/samsyn/samsyn/coordinator/nodeclient"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/wire"
	"github.com/samsyn/samsyn/queries/wire/mtls"
)

// percentiles reports p50 and p99 of samples in milliseconds.
func percentiles(b *testing.B, samples []time.Duration) {
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	at := func(q float64) float64 {
		i := int(q * float64(len(samples)-1))
		return float64(samples[i].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50_ms")
	b.ReportMetric(at(0.99), "p99_ms")
}

// BenchmarkStudyOneQueryEightNodes runs single-query studies over the eight-node federation
// with 1,900 synthetic participants in all: submit, eight signed approvals, fan-out, merge,
// output checks, release — end to end through the coordinator, one at a time.
func BenchmarkStudyOneQueryEightNodes(b *testing.B) {
	f := startInProc(b, 1900/8)
	req := &study.Request{Title: "bench", Purpose: "bench", OnNodeFailure: study.OnFailureFail,
		Queries: []study.QueryReq{{ID: "exits_by_municipality", Params: map[string]string{"from": "2020-04-01", "to": "2022-09-30"}}}}
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		s, err := f.coord.Submit(context.Background(), req, "eva")
		if err != nil {
			b.Fatal(err)
		}
		f.approveAll(b, s)
		if got := f.wait(b, s.ID); got.State != study.Released {
			b.Fatalf("study %s", got.State)
		}
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	percentiles(b, samples)
}

// BenchmarkStudiesPerSecond submits single-query studies from many goroutines and reports
// how many are released per second.
func BenchmarkStudiesPerSecond(b *testing.B) {
	f := startInProc(b, 1900/8)
	req := &study.Request{Title: "bench", Purpose: "bench", OnNodeFailure: study.OnFailureFail,
		Queries: []study.QueryReq{{ID: "exits_by_association", Params: map[string]string{"from": "2020-04-01", "to": "2022-09-30"}}}}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan struct{})
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				s, err := f.coord.Submit(context.Background(), req, "eva")
				if err != nil {
					b.Error(err)
					return
				}
				f.approveAll(b, s)
				f.wait(b, s.ID)
			}
		}()
	}
	for i := 0; i < b.N; i++ {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "studies/s")
}

// simulatedNode is a Flight server on loopback with mutual TLS that answers every DoGet with
// the same small protected table: a stand-in for fan-out figures at 64 and 256 nodes, where
// running that many DuckDB stores in one process would measure the machine, not the fan-out.
type simulatedNode struct {
	flight.BaseFlightServer
	rec arrow.Record
}

func (s *simulatedNode) DoGet(_ *flight.Ticket, stream flight.FlightService_DoGetServer) error {
	w := flight.NewRecordWriter(stream, ipc.WithSchema(s.rec.Schema()))
	defer w.Close()
	return w.Write(s.rec)
}

func benchFanOut(b *testing.B, nodes int) {
	dir := b.TempDir()
	ca, _ := mtls.NewCA("bench", time.Hour)
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	leaf := func(name, id string) mtls.Files {
		l, _ := ca.Issue(id, []string{"127.0.0.1"}, time.Hour)
		fs := mtls.Files{CA: caFile, Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
		mtls.WriteFiles(fs.Cert, l.CertPEM, fs.Key, l.KeyPEM)
		return fs
	}
	coordFiles := leaf("coord", mtls.CoordinatorIdentity("region"))
	nodeFiles := leaf("node", mtls.NodeIdentity("sim"))
	bld := array.NewRecordBuilder(memory.DefaultAllocator, arrow.NewSchema([]arrow.Field{
		{Name: "g", Type: arrow.BinaryTypes.String}, {Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "suppressed", Type: arrow.FixedWidthTypes.Boolean}}, nil))
	for i := 0; i < 30; i++ {
		bld.Field(0).(*array.StringBuilder).Append(fmt.Sprint(i))
		bld.Field(1).(*array.Int64Builder).Append(int64(10 + i))
		bld.Field(2).(*array.BooleanBuilder).Append(false)
	}
	rec := bld.NewRecord()
	defer rec.Release()
	serverTLS, err := mtls.ServerConfig(nodeFiles, mtls.CoordinatorIdentity("region"))
	if err != nil {
		b.Fatal(err)
	}
	clientTLS, err := mtls.ClientConfig(coordFiles, mtls.NodeIdentity("sim"))
	if err != nil {
		b.Fatal(err)
	}
	var targets []fanout.Target
	for i := 0; i < nodes; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := flight.NewServerWithMiddleware(nil, grpc.Creds(credentials.NewTLS(serverTLS)))
		srv.RegisterFlightService(&simulatedNode{rec: rec})
		srv.InitListener(ln)
		go srv.Serve()
		b.Cleanup(srv.Shutdown)
		c, err := nodeclient.Dial(fmt.Sprint("sim", i), ln.Addr().String(), clientTLS, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		targets = append(targets, fanout.Target{Association: fmt.Sprint("sim", i), Node: c, Ticket: func() ([]byte, error) { return []byte("t"), nil }})
	}
	// Connect every client before measuring.
	for _, o := range fanout.Run(context.Background(), targets, fanout.Options{NodeTimeout: 30 * time.Second}) {
		if o.Err != nil {
			b.Fatal(o.Err)
		}
		o.Release.Table.Release()
	}
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		for _, o := range fanout.Run(context.Background(), targets, fanout.Options{NodeTimeout: 10 * time.Second}) {
			if o.Err != nil {
				b.Fatal(o.Err)
			}
			o.Release.Table.Release()
		}
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	percentiles(b, samples)
}

func BenchmarkFanOut64(b *testing.B)  { benchFanOut(b, 64) }
func BenchmarkFanOut256(b *testing.B) { benchFanOut(b, 256) }

// BenchmarkQueryEightNodes measures one catalog query over the eight-node federation (1,900
// participants in all) without the study workflow around it: signed tickets to eight real
// nodes over mTLS, each node's executor and disclosure control, and the coordinator's merge.
func BenchmarkQueryEightNodes(b *testing.B) { benchQueryEightNodes(b, false) }

// BenchmarkQueryEightNodesCold is BenchmarkQueryEightNodes with the nodes' release cache off:
// every node runs the query each time.
func BenchmarkQueryEightNodesCold(b *testing.B) { benchQueryEightNodes(b, true) }

// BenchmarkQueryOneNodeCold is the cold query with one node of the same size (237
// participants) alone on the machine, as each association's node is in production: the
// latency of one node's part, the coordinator's ticket and merge included.
func BenchmarkQueryOneNodeCold(b *testing.B) { benchQueryEightNodes(b, true, "hbs") }

func benchQueryEightNodes(b *testing.B, cold bool, only ...string) {
	f := startFederation(b, inprocOptions{perNode: 1900 / 8, noCache: cold, onlyAssoc: only})
	cat := f.coord.Catalog()
	e, _ := cat.Get("exits_by_municipality")
	params := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	var targets []fanout.Target
	for _, n := range f.coord.Nodes() {
		assoc := n.Association
		tk := wire.Ticket{StudyID: "st-bench", QueryID: e.ID, QueryHash: e.Hash(), Params: params, CatalogSignature: f.signatures.Signature(e.ID),
			Association: assoc, Approval: ed25519.Sign(f.assocKeys[assoc], wire.ApprovalMessage("st-bench", assoc, e.ID, e.Hash(), params))}
		targets = append(targets, fanout.Target{Association: assoc, Node: n.Client, Ticket: func() ([]byte, error) {
			t := tk
			t.Nonce, _ = wire.NewNonce()
			t.NotBefore, t.Expires = time.Now().Add(-time.Second), time.Now().Add(time.Minute)
			return wire.Sign(t, f.ticket)
		}})
	}
	spec := e.Spec("")
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		var inputs []merge.Input
		for _, o := range fanout.Run(context.Background(), targets, fanout.Options{NodeTimeout: 10 * time.Second}) {
			if o.Err != nil {
				b.Fatal(o.Err)
			}
			inputs = append(inputs, merge.Input{Association: o.Association, Table: o.Release.Table})
		}
		out, _, err := merge.Merge(memory.DefaultAllocator, spec, inputs, disclosure.Defaults(), nil)
		if err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
		out.Release()
		for _, in := range inputs {
			in.Table.Release()
		}
	}
	b.StopTimer()
	percentiles(b, samples)
}

// BenchmarkFederatedVsPlainDuckDB builds the federation at 8 × N participants
// (SAMSYN_BENCH_N, default 100,000), copies every node's rows into one DuckDB, and runs,
// interleaved, a pooled study of three catalog queries through the coordinator (tickets,
// eight nodes' aggregates and contributions over mutual TLS, secure sums, protection, the
// release; the nodes' caches off) and the same three aggregates as plain DuckDB statements
// over all 8 × N rows. It reports the medians and their ratio.
func BenchmarkFederatedVsPlainDuckDB(b *testing.B) {
	n := 100_000
	if v := os.Getenv("SAMSYN_BENCH_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			b.Fatalf("SAMSYN_BENCH_N=%q: expected a number of participants per node, at least 100", v)
		}
	}
	dir := b.TempDir()
	pooledPath := filepath.Join(dir, "pooled.duckdb")
	pooled, err := store.Open(context.Background(), pooledPath)
	if err != nil {
		b.Fatal(err)
	}
	pooled.Close()
	f := startFederation(b, inprocOptions{perNode: n, noCache: true, pooled: pooledPath, slow: n > 100_000})
	pooled, err = store.Open(context.Background(), pooledPath)
	if err != nil {
		b.Fatal(err)
	}
	defer pooled.Close()
	period := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	ids := []string{"exits_by_municipality", "outcome_by_method", "participants_by_association"}
	var qs []study.QueryReq
	type plainQ struct {
		sql  string
		args []any
	}
	var plains []plainQ
	for _, id := range ids {
		e, _ := f.coord.Catalog().Get(id)
		bound, err := e.Bind(period)
		if err != nil {
			b.Fatal(err)
		}
		qs = append(qs, study.QueryReq{ID: id, Params: period})
		plains = append(plains, plainQ{e.PlainSQL(false), bound.Args()})
	}
	ctx := context.Background()
	var fed, plain []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		s, err := f.coord.Submit(ctx, &study.Request{Title: "bench", Purpose: "bench", Queries: qs, OnNodeFailure: study.OnFailureFail}, "eva")
		if err != nil {
			b.Fatal(err)
		}
		f.approveAll(b, s)
		f.released(b, s)
		fed = append(fed, time.Since(start))
		start = time.Now()
		for _, p := range plains {
			rows, err := pooled.DB().QueryContext(ctx, p.sql, p.args...)
			if err != nil {
				b.Fatal(err)
			}
			for rows.Next() {
			}
			rows.Close()
		}
		plain = append(plain, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(fed)
	slices.Sort(plain)
	fm, pm := fed[len(fed)/2], plain[len(plain)/2]
	b.ReportMetric(float64(fm.Milliseconds()), "federated_ms")
	b.ReportMetric(float64(pm.Milliseconds()), "plain_ms")
	b.ReportMetric(fm.Seconds()/pm.Seconds(), "ratio")
}
