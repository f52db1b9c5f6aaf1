package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/samsyn/samsyn/node/nodetest"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
)

var secret = []byte("executor-test-secret-0123456789a")

func newExecutor(t testing.TB, n int) (*Executor, *queries.Catalog, *memory.CheckedAllocator) {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "store.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	nodetest.Seed(t, st.DB(), "hbs", n)
	cat, err := queries.LoadDir("../../queries/catalog")
	if err != nil {
		t.Fatal(err)
	}
	alloc := memory.NewCheckedAllocator(memory.NewGoAllocator())
	x, err := New(context.Background(), st, Options{Association: "hbs", Secret: secret, Policy: disclosure.Defaults(), Allocator: alloc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x, cat, alloc
}

var period = map[string]string{"from": "2020-04-01", "to": "2022-09-30"}

func TestEveryCatalogQueryReleasesOnlyProtectedCells(t *testing.T) {
	x, cat, alloc := newExecutor(t, 900)
	ctx := context.Background()
	released := 0
	for _, id := range cat.IDs() {
		e, _ := cat.Get(id)
		if e.IsAnalysis() {
			continue // analyses run through their plugins: analysis_test.go
		}
		b, err := e.Bind(period)
		if err != nil {
			t.Fatal(err)
		}
		res, err := x.Run(ctx, e, b)
		if errors.Is(err, disclosure.ErrTooSparse) {
			t.Logf("%s: refused as too sparse (%v)", id, err)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		released++
		truth, err := x.Aggregate(ctx, e, b)
		if err != nil {
			t.Fatal(err)
		}
		trueN := map[string]int64{}
		tn := truth.Column(truth.Schema().FieldIndices(disclosure.ColN)[0]).(*array.Int64)
		for r := 0; r < int(truth.NumRows()); r++ {
			trueN[cellKey(truth, len(e.Dimensions), r)] = tn.Value(r)
		}
		truth.Release()
		tab := res.Table
		nCol := tab.Column(len(e.Dimensions)).(*array.Int64)
		sup := tab.Column(len(e.Dimensions) + 1).(*array.Boolean)
		for r := 0; r < int(tab.NumRows()); r++ {
			k := cellKey(tab, len(e.Dimensions), r)
			if sup.Value(r) {
				if !nCol.IsNull(r) {
					t.Fatalf("%s %s: suppressed with a count", id, k)
				}
				continue
			}
			got, want := nCol.Value(r), trueN[k]
			if got >= 1 && got <= 4 || want >= 1 && want <= 4 {
				t.Fatalf("%s %s: released %d for %d participants", id, k, got, want)
			}
			if d := got - want; d < -2 || d > 2 {
				t.Fatalf("%s %s: released %d for %d participants", id, k, got, want)
			}
		}
		if tab.Schema().HasField(disclosure.ColCellKey) {
			t.Fatalf("%s: the cell key left the executor", id)
		}
		tab.Release()
	}
	if released < 10 {
		t.Fatalf("only %d queries released", released)
	}
	alloc.AssertSize(t, 0)
}

// cellKey names a cell by its dimension values, margins as disclosure.Total.
func cellKey(rec arrow.Record, dims, r int) string {
	parts := make([]string, dims)
	for i := range parts {
		col := rec.Column(i).(*array.String)
		if col.IsNull(r) {
			parts[i] = disclosure.Total
		} else {
			parts[i] = col.Value(r)
		}
	}
	return strings.Join(parts, "|")
}

func TestDeadlineStopsALongQuery(t *testing.T) {
	x, cat, _ := newExecutor(t, 50)
	x.opts.Timeout = time.Nanosecond
	e, _ := cat.Get("outcome_by_method")
	b, _ := e.Bind(period)
	if _, err := x.Run(context.Background(), e, b); !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v", err)
	}
}

func TestTheStoreCannotReadFilesOnceServing(t *testing.T) {
	x, _, _ := newExecutor(t, 10)
	_, err := x.store.DB().Exec("SELECT * FROM read_csv('/etc/hostname')")
	if err == nil {
		t.Fatal("external access is still enabled")
	}
}

func benchEnv(b *testing.B) int {
	v := os.Getenv("SAMSYN_BENCH_NODE_ROWS")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("SAMSYN_BENCH_NODE_ROWS=%q", v)
	}
	return n
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func TestRepeatedQueriesAreAnsweredFromTheCacheUntilTheDataChanges(t *testing.T) {
	x, cat, alloc := newExecutor(t, 600)
	x.cache = newReleaseCache(8)
	ctx := context.Background()
	e, _ := cat.Get("exits_by_association")
	b, _ := e.Bind(period)
	first, err := x.Run(ctx, e, b)
	if err != nil || first.Cached {
		t.Fatalf("first run: %+v %v", first, err)
	}
	again, err := x.Run(ctx, e, b)
	if err != nil || !again.Cached || cellKeyTable(again.Table) != cellKeyTable(first.Table) {
		t.Fatalf("second run: cached=%v %v", again.Cached, err)
	}
	first.Table.Release()
	again.Table.Release()
	// An import as the importer ends one: the log entry, then the store told (importer_test
	// checks that a real import does both).
	if _, err := x.store.DB().Exec(`INSERT INTO samsyn_import VALUES (99, 'participant', 'x.csv', 'ab', 1, 1, 1, now(), 'new-snapshot')`); err != nil {
		t.Fatal(err)
	}
	x.store.Committed(store.ImportRecord{SnapshotID: "new-snapshot"})
	fresh, err := x.Run(ctx, e, b)
	if err != nil || fresh.Cached || fresh.Snapshot != "new-snapshot" {
		t.Fatalf("after an import: cached=%v snapshot=%s %v", fresh.Cached, fresh.Snapshot, err)
	}
	fresh.Table.Release()
	x.cache.clear()
	alloc.AssertSize(t, 0)
}

func cellKeyTable(rec arrow.Record) string {
	var b strings.Builder
	for r := 0; r < int(rec.NumRows()); r++ {
		b.WriteString(cellKey(rec, 2, r))
		b.WriteString(fmt.Sprint(rec.Column(2).(*array.Int64).Value(r), ";"))
	}
	return b.String()
}

// TestTheAggregateAgreesWithHandWrittenSQL checks the node's generated aggregate against an
// oracle written by hand over the store's tables: distinct participants per cell and per
// margin (GROUP BY CUBE), for queries of two dimensions, and the mean of a measure.
func TestTheAggregateAgreesWithHandWrittenSQL(t *testing.T) {
	x, cat, _ := newExecutor(t, 900)
	ctx := context.Background()
	cases := []struct {
		id, oracle string
	}{
		{"outcome_by_referral_party", `SELECT p.referral_party AS a, coalesce(e.outcome, '_other') AS b, count(DISTINCT p.participant_key) AS n, CAST(NULL AS DOUBLE) AS m
			FROM participant p JOIN episode e USING (participant_key)
			WHERE e.exit_date BETWEEN DATE '2020-04-01' AND DATE '2022-09-30' GROUP BY CUBE (1, 2)`},
		{"exits_by_municipality", `SELECT p.municipality AS a, coalesce(e.outcome, '_other') AS b, count(DISTINCT p.participant_key) AS n,
			CAST(sum(date_diff('month', e.start_date, e.exit_date)) AS DOUBLE) AS m
			FROM participant p JOIN episode e USING (participant_key)
			WHERE e.exit_date BETWEEN DATE '2020-04-01' AND DATE '2022-09-30' GROUP BY CUBE (1, 2)`},
	}
	for _, c := range cases {
		t.Run(c.id, func(t *testing.T) {
			e, _ := cat.Get(c.id)
			b, err := e.Bind(period)
			if err != nil {
				t.Fatal(err)
			}
			agg, err := x.Aggregate(ctx, e, b)
			if err != nil {
				t.Fatal(err)
			}
			defer agg.Release()
			got := map[string]int64{}
			gotSum := map[string]float64{}
			n := agg.Column(agg.Schema().FieldIndices(disclosure.ColN)[0]).(*array.Int64)
			var sum *array.Float64
			if len(e.Measures) > 0 {
				sum = agg.Column(agg.Schema().FieldIndices(e.Measures[0].Name + disclosure.SuffixSum)[0]).(*array.Float64)
			}
			for r := 0; r < int(agg.NumRows()); r++ {
				k := cellKey(agg, 2, r)
				got[k] = n.Value(r)
				if sum != nil {
					gotSum[k] = sum.Value(r)
				}
			}
			rows, err := x.store.DB().QueryContext(ctx, c.oracle)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			checked := 0
			for rows.Next() {
				var a, bv *string
				var want int64
				var m *float64
				if err := rows.Scan(&a, &bv, &want, &m); err != nil {
					t.Fatal(err)
				}
				av, bs := disclosure.Total, disclosure.Total
				if a != nil {
					av = *a
				}
				if bv != nil {
					bs = *bv
				}
				k := av + "|" + bs
				if got[k] != want {
					t.Fatalf("%s %q: the aggregate has %d participants, hand-written SQL %d", c.id, k, got[k], want)
				}
				if sum != nil && m != nil && gotSum[k] != *m {
					t.Fatalf("%s %q: measure sum %g, hand-written SQL %g", c.id, k, gotSum[k], *m)
				}
				checked++
			}
			if checked < 10 {
				t.Fatalf("only %d cells compared", checked)
			}
		})
	}
}

// Record keys are computed inside the node's statements from a key in each of the node's
// connections' temporary macros: the store's catalog, which every connection sees (the
// analysts' SQL service's included), holds no function of Samsyn's that could compute them,
// before or after the node has run its queries, and another connection cannot call the macro.
func TestTheStoreHoldsNoRecordKeyFunction(t *testing.T) {
	x, cat, _ := newExecutor(t, 300)
	ctx := context.Background()
	e, _ := cat.Get("outcome_by_method")
	b, _ := e.Bind(period)
	rec, _, err := x.aggregate(ctx, e, b)
	if err != nil {
		t.Fatal(err)
	}
	rec.Release()
	conn, err := x.store.DB().Conn(ctx) // another connection, as the SQL service has
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var names []string
	rows, err := conn.QueryContext(ctx, `SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_name ILIKE '%samsyn%' OR function_name ILIKE '%record%key%'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		names = append(names, n)
	}
	rows.Close()
	if len(names) > 0 {
		t.Fatalf("functions in the store's catalog: %v", names)
	}
	var key string
	if err := conn.QueryRowContext(ctx, "SELECT "+queries.RecordKeyMacro+"()").Scan(&key); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("another connection reads the record-key key: %q, %v", key, err)
	}
	if strings.Contains(x.rkKey, string(x.opts.Secret)) || len(x.rkKey) != 64 {
		t.Fatalf("the record-key key is not a 64-character derivation of the secret")
	}
}

// Options.Threads (query.threads) sets DuckDB's worker threads for the store; 0 leaves
// DuckDB's default.
func TestThreadsOptionSetsDuckDBsWorkerThreads(t *testing.T) {
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "store.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	x, err := New(context.Background(), st, Options{Association: "hbs", Secret: secret, Policy: disclosure.Defaults(), Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	var threads int
	if err := st.DB().QueryRow("SELECT current_setting('threads')").Scan(&threads); err != nil || threads != 1 {
		t.Fatalf("threads %d (%v), want 1", threads, err)
	}
}
