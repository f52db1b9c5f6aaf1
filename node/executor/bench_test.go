package executor

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries/disclosure"
)

// BenchmarkRunVsDirect runs each catalog query through the executor (aggregate, record keys,
// disclosure control, the Arrow table; the release cache off) and, interleaved in the same
// run, the plain aggregate (plainSQL: the view, the grouping sets, count(DISTINCT
// participant_key) and the measures' sums, no Samsyn function; the values written in and
// prepared once, as the node's) straight on the store, rows drained, on a node of SAMSYN_BENCH_NODE_ROWS participants (default 1,900). It reports the
// medians and their ratio.
func BenchmarkRunVsDirect(b *testing.B) {
	rows := 1900
	if v := benchEnv(b); v > 0 {
		rows = v
	}
	x, cat, _ := newExecutor(b, rows)
	x.cache = newReleaseCache(0)
	ctx := context.Background()
	for _, id := range cat.IDs() {
		e, _ := cat.Get(id)
		if e.IsAnalysis() {
			continue // analyses: BenchmarkAnalysis*
		}
		bound, _ := e.Bind(period)
		// Plain DuckDB at its best too: the values written in, prepared once.
		plain, err := bound.Inline(e.PlainSQL(false))
		if err != nil {
			b.Fatal(err)
		}
		plainStmt, err := x.store.DB().PrepareContext(ctx, plain)
		if err != nil {
			b.Fatal(err)
		}
		defer plainStmt.Close()
		b.Run(id, func(b *testing.B) {
			var ours, direct []time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				res, err := x.Run(ctx, e, bound)
				if err == nil {
					res.Table.Release()
				} else if !isSparse(err) {
					b.Fatal(err)
				}
				ours = append(ours, time.Since(start))
				start = time.Now()
				r, err := plainStmt.QueryContext(ctx)
				if err != nil {
					b.Fatal(err)
				}
				for r.Next() {
				}
				r.Close()
				direct = append(direct, time.Since(start))
			}
			node, duck := median(ours), median(direct)
			b.ReportMetric(float64(node.Microseconds())/1000, "node_ms")
			b.ReportMetric(float64(duck.Microseconds())/1000, "plain_ms")
			b.ReportMetric(node.Seconds()/duck.Seconds(), "ratio")
		})
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func isSparse(err error) bool { return err != nil && errorsIs(err, disclosure.ErrTooSparse) }

// BenchmarkNodeRSS runs every catalog table query on a node of SAMSYN_BENCH_NODE_ROWS participants
// (default 1,000,000) with a 256 MB DuckDB memory limit (SAMSYN_BENCH_MEMORY_LIMIT) and reports the process's peak RSS
// (VmHWM) afterwards: the node's memory while serving, from a store opened afresh.
func BenchmarkNodeRSS(b *testing.B) {
	rows := 1_000_000
	if v := benchEnv(b); v > 0 {
		rows = v
	}
	seeded, cat, _ := newExecutor(b, rows)
	limit := "256MB"
	if v := os.Getenv("SAMSYN_BENCH_MEMORY_LIMIT"); v != "" {
		limit = sanitizeSize(v)
	}
	// A node serves from its store file: close the one just filled (the rows were made in
	// this process, which a node never does), give the memory back, and open it afresh as
	// the node does at start, with the memory limit its configuration sets.
	path := seeded.store.Path()
	seeded.Close()
	seeded.store.Close()
	runtime.GC()
	debug.FreeOSMemory()
	st, err := store.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	x, err := New(context.Background(), st, Options{Association: "hbs", Secret: secret, Policy: disclosure.Defaults(), MemoryLimit: limit})
	if err != nil {
		b.Fatal(err)
	}
	defer x.Close()
	ctx := context.Background()
	// Loading the rows is not serving: reset the peak (Linux: 5 > clear_refs) before queries.
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0o200); err != nil {
		b.Logf("could not reset the RSS peak (%v): the figure includes loading", err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, id := range cat.IDs() {
			e, _ := cat.Get(id)
			if e.IsAnalysis() {
				continue // the table queries; analyses run in their plugins' processes
			}
			bound, _ := e.Bind(period)
			res, err := x.Run(ctx, e, bound)
			if err == nil {
				res.Table.Release()
			} else if !isSparse(err) {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(peakRSSMB(b), "peak_rss_MB")
}

func peakRSSMB(b *testing.B) float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status on this system")
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}
