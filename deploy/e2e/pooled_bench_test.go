package e2e

import (
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/merge"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/node/executor"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/secagg"
	"github.com/samsyn/samsyn/schemas"
)

// tally counts, over the non-empty cells of the truth, how many a release shows and how far
// its counts are from the truth.
type tally struct {
	nonEmpty, released int
	absErr             float64
	smallReleased      int // released cells whose true count is 1 to 4
}

func (t *tally) add(tb testing.TB, e *queries.Entry, truth map[string]int64, rec arrow.Record) {
	for _, n := range truth {
		if n > 0 {
			t.nonEmpty++
		}
	}
	if rec == nil {
		return
	}
	tbl := readTable(tb, e, rec)
	for i := 0; i < tbl.Len(); i++ {
		k, c := tbl.Key(i), tbl.Cell(i)
		if truth[k] > 0 && !c.Suppressed && c.N != nil {
			t.released++
			t.absErr += math.Abs(float64(*c.N - truth[k]))
			if truth[k] < 5 {
				t.smallReleased++
			}
		}
	}
}

func (t *tally) share() float64 { return float64(t.released) / float64(t.nonEmpty) }
func (t *tally) mae() float64   { return t.absErr / float64(max(t.released, 1)) }

// copyStore copies a node's store file (checkpointed when it was seeded) and opens the copy.
func copyStore(tb testing.TB, from, dir, name string) *store.Store {
	raw, err := os.ReadFile(from)
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(dir, name+".duckdb")
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		tb.Fatal(err)
	}
	st, err := store.Open(context.Background(), p)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// BenchmarkReleasedShareAcrossTheCatalog compares, over the whole catalog for the project
// period on the demo federation (its synthetic exports: 1,900 participants): one central table protected once (the upper
// bound), the pooled release (secure sum, protected once at the coordinator), and the first
// wave's merge of tables each node protected on its own. It reports the share of non-empty
// cells each releases, their mean absolute error against the true counts, and the share of
// the study's time spent masking and summing.
func BenchmarkReleasedShareAcrossTheCatalog(b *testing.B) {
	f := startInProc(b, 0)
	ctx := context.Background()
	dir := b.TempDir()
	pol := disclosure.Defaults()
	fed := f.coord.Federation()
	central := copyStore(b, filepath.Join(f.dir, "nodes", fed[0], "store.duckdb"), dir, "central")
	nodeX := map[string]*executor.Executor{}
	for i, a := range fed {
		st := copyStore(b, filepath.Join(f.dir, "nodes", a, "store.duckdb"), dir, a)
		x, err := executor.New(ctx, st, executor.Options{Association: a, Secret: []byte("secret-of-" + a + "-0123456789"), Policy: pol})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { x.Close() })
		nodeX[a] = x
		if i == 0 {
			continue
		}
		for _, t := range schemas.V1().TableNames() {
			p := filepath.Join(dir, a+".duckdb")
			if _, err := central.DB().Exec(fmt.Sprintf("ATTACH '%s' AS src (READ_ONLY); INSERT INTO %s SELECT * FROM src.%s; DETACH src", p, t, t)); err != nil {
				b.Fatal(err)
			}
		}
	}
	cx, err := executor.New(ctx, central, executor.Options{Association: "", Secret: []byte("the-central-holder's-secret"), Policy: pol})
	if err != nil {
		b.Fatal(err)
	}
	defer cx.Close()

	var centralT, pooledT, mergedT tally
	var studyTime, secaggTime time.Duration
	var perQuery []string
	for range b.N {
		centralT, pooledT, mergedT = tally{}, tally{}, tally{}
		start := time.Now()
		s, err := f.coord.Submit(ctx, &study.Request{Title: "Andel", Purpose: "bench", Queries: allQueries(f.coord.Catalog()), OnNodeFailure: study.OnFailurePartial}, "evaluator")
		if err != nil {
			b.Fatal(err)
		}
		f.approveAll(b, s)
		if got := f.wait(b, s.ID); got.State != study.Released {
			b.Fatalf("study %s", got.State)
		}
		studyTime = time.Since(start)
		results, _ := f.store.Results(ctx, s.ID)
		pooled := map[string]arrow.Record{}
		for _, r := range results {
			rec, err := coordinator.Decode(r.Release)
			if err != nil {
				b.Fatal(err)
			}
			pooled[r.QueryID] = rec
		}
		secaggTime = 0
		perQuery = nil
		for _, q := range s.Queries {
			e, _ := f.coord.Catalog().Get(q.ID)
			nd := len(e.Dimensions)
			c0, p0, m0 := centralT.released, pooledT.released, mergedT.released
			bound, err := e.Bind(q.Params)
			if err != nil {
				b.Fatal(err)
			}
			agg, err := cx.Aggregate(ctx, e, bound)
			if err != nil {
				b.Fatal(err)
			}
			truth := map[string]int64{}
			for i := 0; i < int(agg.NumRows()); i++ {
				truth[keyOrTotal(agg, nd, i)] = agg.Column(nd).(*array.Int64).Value(i)
			}
			agg.Release()
			// The central table: every participant in one place, protected once by the same
			// rules as the pooled release (one contributor, no masks).
			layout, err := e.Layout()
			if err != nil {
				b.Fatal(err)
			}
			cagg, err := cx.Aggregate(ctx, e, bound)
			if err != nil {
				b.Fatal(err)
			}
			vec, _, err := disclosure.Contribute(cagg, layout, pol, nil)
			cagg.Release()
			if err != nil {
				b.Fatal(err)
			}
			// One holder: one contributor's noise in every cell.
			full := e.Coverage(fed, fed)
			one := func(cell map[string]string) (int, int) {
				could, present := full(cell)
				return could, min(present, 1)
			}
			ctable, _, err := disclosure.ProtectPooled(memory.DefaultAllocator, layout, vec, pol, one)
			switch {
			case errors.Is(err, disclosure.ErrTooSparse):
				centralT.add(b, e, truth, nil)
			case err != nil:
				b.Fatal(err)
			default:
				centralT.add(b, e, truth, ctable)
				ctable.Release()
			}
			pooledT.add(b, e, truth, pooled[q.ID])
			var inputs []merge.Input
			for _, a := range fed {
				r, err := nodeX[a].Run(ctx, e, bound)
				if err != nil {
					continue // refused as too sparse: missing from the merge
				}
				defer r.Table.Release()
				inputs = append(inputs, merge.Input{Association: a, Table: r.Table})
			}
			if len(inputs) > 0 {
				m, _, err := merge.Merge(memory.DefaultAllocator, e.Spec(""), inputs, pol, nil)
				if err != nil {
					b.Fatal(err)
				}
				mergedT.add(b, e, truth, m)
				m.Release()
			} else {
				mergedT.add(b, e, truth, nil)
			}
			secaggTime += maskAndSumTime(b, e, fed)
			perQuery = append(perQuery, fmt.Sprintf("%s %d/%d/%d", q.ID, centralT.released-c0, pooledT.released-p0, mergedT.released-m0))
		}
		for _, r := range pooled {
			r.Release()
		}
	}
	b.ReportMetric(100*centralT.share(), "%central")
	b.ReportMetric(100*pooledT.share(), "%pooled")
	b.ReportMetric(100*mergedT.share(), "%pernode")
	b.ReportMetric(centralT.mae(), "mae_central")
	b.ReportMetric(pooledT.mae(), "mae_pooled")
	b.ReportMetric(mergedT.mae(), "mae_pernode")
	b.ReportMetric(100*secaggTime.Seconds()/studyTime.Seconds(), "%secagg_of_study")
	b.ReportMetric(float64(centralT.smallReleased), "true<5_central")
	b.ReportMetric(float64(pooledT.smallReleased), "true<5_pooled")
	b.ReportMetric(float64(mergedT.smallReleased), "true<5_pernode")
	b.Logf("non-empty cells %d; released: central %d, pooled %d, per node %d; study %s, masking and summing %s",
		centralT.nonEmpty, centralT.released, pooledT.released, mergedT.released, studyTime.Round(time.Millisecond), secaggTime.Round(time.Microsecond))
	b.Logf("released per query (central/pooled/per node): %s", strings.Join(perQuery, "; "))
}

// keyOrTotal names an aggregate's cell, a NULL dimension being the margin.
func keyOrTotal(rec arrow.Record, nd, i int) string {
	k := ""
	for d := 0; d < nd; d++ {
		if d > 0 {
			k += "|"
		}
		c := rec.Column(d).(*array.String)
		if c.IsNull(i) {
			k += disclosure.Total
		} else {
			k += c.Value(i)
		}
	}
	return k
}

// maskAndSumTime is the secure aggregation's own work for one query: every node masking a
// vector of the query's layout for a cohort of the whole federation, and the sum.
func maskAndSumTime(tb testing.TB, e *queries.Entry, fed []string) time.Duration {
	l, err := e.Layout()
	if err != nil {
		tb.Fatal(err)
	}
	r := secagg.Round{Study: "bench", QueryID: e.ID, QueryHash: e.Hash(), Params: "p", Cohort: slices.Sorted(slices.Values(fed)), Round: 1, Length: l.Len()}
	peers := map[string]*ecdh.PublicKey{}
	keys := map[string]*ecdh.PrivateKey{}
	for _, a := range fed {
		k, _ := secagg.DeriveKey([]byte("secret-of-" + a + "-0123456789"))
		keys[a], peers[a] = k, k.PublicKey()
	}
	vec := make([]uint64, l.Len())
	start := time.Now()
	var all [][]uint64
	for _, a := range fed {
		m, err := secagg.Mask(a, keys[a], peers, r, vec)
		if err != nil {
			tb.Fatal(err)
		}
		all = append(all, m)
	}
	if _, err := secagg.Sum(all...); err != nil {
		tb.Fatal(err)
	}
	return time.Since(start)
}
