package executor

import (
	"context"
	"testing"
	"time"

	"github.com/samsyn/samsyn/queries/disclosure"
)

// BenchmarkRunVsDirect runs each catalog query through the executor (aggregate, record keys,
// disclosure control) and, in the same run, the same aggregate SQL straight on the store
// (rows drained, nothing protected), on a node of SAMSYN_BENCH_NODE_ROWS participants
// (default 1,900).
func BenchmarkRunVsDirect(b *testing.B) {
	rows := 1900
	if v := benchEnv(b); v > 0 {
		rows = v
	}
	x, cat, _ := newExecutor(b, rows)
	ctx := context.Background()
	for _, id := range cat.IDs() {
		e, _ := cat.Get(id)
		bound, _ := e.Bind(period)
		sqlText, _ := e.AggregateSQL()
		b.Run(id, func(b *testing.B) {
			var ours, direct time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				res, err := x.Run(ctx, e, bound)
				if err == nil {
					res.Table.Release()
				} else if !isSparse(err) {
					b.Fatal(err)
				}
				ours += time.Since(start)
				start = time.Now()
				r, err := x.store.DB().QueryContext(ctx, sqlText, bound.Args()...)
				if err != nil {
					b.Fatal(err)
				}
				for r.Next() {
				}
				r.Close()
				direct += time.Since(start)
			}
			b.ReportMetric(float64(ours.Microseconds())/1000/float64(b.N), "node_ms")
			b.ReportMetric(float64(direct.Microseconds())/1000/float64(b.N), "duckdb_ms")
			b.ReportMetric(ours.Seconds()/direct.Seconds(), "ratio")
		})
	}
}

func isSparse(err error) bool { return err != nil && errorsIs(err, disclosure.ErrTooSparse) }
