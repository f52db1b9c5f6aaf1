package executor

import (
	"context"
	"database/sql/driver"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/marcboeker/go-duckdb"

	"github.com/samsyn/samsyn/analysis/logit"
	"github.com/samsyn/samsyn/node/pluginhost"
)

// BenchmarkPluginCallVsInProcess measures what running an analysis as a plugin costs: one
// model step over a node's rows (1,900 participants) through the pinned plugin process
// (start, checksum, handshake, local mTLS, Arrow stream, kill) against the same computation
// in this process over the same rows.
func BenchmarkPluginCallVsInProcess(b *testing.B) {
	x, st, cat := newAnalysisExecutor(b, 1900)
	e, _ := cat.Get("what_works")
	bound, _ := e.Bind(period)
	req := e.Request(bound)
	req.Coefficients = make([]float64, req.Parameters())
	q, _ := e.AnalysisSQL()
	pq, args := bound.Positional(q)
	ctx := context.Background()
	conn, err := st.DB().Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	var recs []arrow.Record
	var sc *arrow.Schema
	err = conn.Raw(func(dc any) error {
		ar, err := duckdb.NewArrowFromConn(dc.(driver.Conn))
		if err != nil {
			return err
		}
		rd, err := ar.QueryContext(ctx, pq, args...)
		if err != nil {
			return err
		}
		defer rd.Release()
		sc = rd.Schema()
		for rd.Next() {
			rec := rd.Record()
			rec.Retain()
			recs = append(recs, rec)
		}
		return rd.Err()
	})
	if err != nil {
		b.Fatal(err)
	}
	pin, _ := x.pin(e)
	reader := func() array.RecordReader {
		r, err := array.NewRecordReader(sc, recs)
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	var plugin, inproc time.Duration
	b.Run("plugin", func(b *testing.B) {
		start := time.Now()
		for i := 0; i < b.N; i++ {
			if _, err := pluginhost.Run(ctx, pin, pluginhost.Options{}, req, reader()); err != nil {
				b.Fatal(err)
			}
		}
		plugin = time.Since(start) / time.Duration(b.N)
	})
	b.Run("in-process", func(b *testing.B) {
		start := time.Now()
		for i := 0; i < b.N; i++ {
			if _, err := (logit.Analysis{}).Run(ctx, req, reader()); err != nil {
				b.Fatal(err)
			}
		}
		inproc = time.Since(start) / time.Duration(b.N)
	})
	if plugin > 0 && inproc > 0 {
		b.Logf("per call: plugin %s, in process %s, overhead %s", plugin.Round(time.Microsecond), inproc.Round(time.Microsecond), (plugin - inproc).Round(time.Microsecond))
	}
}
