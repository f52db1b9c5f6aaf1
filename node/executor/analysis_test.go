package executor

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/samsyn/samsyn/analysis"
	"github.com/samsyn/samsyn/node/nodetest"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
)

func newAnalysisExecutor(t testing.TB, n int) (*Executor, *store.Store, *queries.Catalog) {
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
	plugins := nodetest.Plugins(t)
	if _, err := cat.Pin(plugins, false); err != nil {
		t.Fatal(err)
	}
	x, err := New(context.Background(), st, Options{Association: "hbs", Secret: secret, Policy: disclosure.Defaults(),
		Allocator: memory.NewGoAllocator(), Plugins: Plugins{Dir: plugins}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x, st, cat
}

// truthCounts reads, from the plugin-made aggregate, the finest cells' counts.
func finestCounts(t *testing.T, x *Executor, e *queries.Entry) map[string]int64 {
	t.Helper()
	agg, _, err := x.analysisAggregate(context.Background(), e, mustBind(t, e))
	if err != nil {
		t.Fatal(err)
	}
	defer agg.Release()
	out := map[string]int64{}
	nd := len(e.Dimensions)
	for r := 0; r < int(agg.NumRows()); r++ {
		key, margin := "", false
		for i := 0; i < nd; i++ {
			c := agg.Column(i).(*array.String)
			if c.IsNull(r) {
				margin = true
			}
			key += c.Value(r) + "/"
		}
		if !margin {
			out[key] = agg.Column(nd).(*array.Int64).Value(r)
		}
	}
	return out
}

func mustBind(t *testing.T, e *queries.Entry) queries.Bound {
	b, err := e.Bind(period)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sqlCounts(t *testing.T, st *store.Store, q string) map[string]int64 {
	t.Helper()
	rows, err := st.DB().Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int64{}
	cols, _ := rows.Columns()
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		key := ""
		for _, v := range vals[:len(vals)-1] {
			key += fmt.Sprint(v) + "/"
		}
		out[key] = vals[len(vals)-1].(int64)
	}
	return out
}

func sameCounts(t *testing.T, what string, got, want map[string]int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d cells, the oracle has %d", what, len(got), len(want))
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s %s: %d, the oracle %d", what, k, got[k], w)
		}
	}
}

func TestPluginCountsMatchHandWrittenSQL(t *testing.T) {
	x, st, cat := newAnalysisExecutor(t, 400)
	e, _ := cat.Get("pathways")
	sameCounts(t, "pathways", finestCounts(t, x, e), sqlCounts(t, st, `
		WITH started AS (SELECT DISTINCT participant_key FROM episode WHERE start_date BETWEEN DATE '2020-04-01' AND DATE '2022-09-30'),
		ordered AS (SELECT participant_key, method, row_number() OVER (PARTITION BY participant_key ORDER BY start_date, method) AS k
		            FROM episode WHERE participant_key IN (SELECT participant_key FROM started))
		SELECT f.method, coalesce(s.method, 'none'), count(*) FROM ordered f LEFT JOIN ordered s ON s.participant_key = f.participant_key AND s.k = 2
		WHERE f.k = 1 GROUP BY ALL`))
	e, _ = cat.Get("time_to_work")
	sameCounts(t, "time_to_work", finestCounts(t, x, e), sqlCounts(t, st, `
		WITH first AS (SELECT *, row_number() OVER (PARTITION BY participant_key ORDER BY start_date, method) AS k FROM episode
		               WHERE start_date BETWEEN DATE '2020-04-01' AND DATE '2022-09-30'),
		t AS (SELECT method, date_diff('month', start_date, least(coalesce(exit_date, DATE '2022-09-30'), DATE '2022-09-30')) AS m,
		             exit_date IS NOT NULL AND outcome IN ('work', 'studies') AS ev FROM first WHERE k = 1)
		SELECT method, CAST(least(m, 36) AS VARCHAR), CASE WHEN ev AND m <= 36 THEN 'event' ELSE 'censored' END, count(*) FROM t GROUP BY ALL`))
}

func TestModelStepCountsAndRefusesASmallNode(t *testing.T) {
	x, st, cat := newAnalysisExecutor(t, 600)
	e, _ := cat.Get("what_works")
	b := mustBind(t, e)
	req := e.Request(b)
	c, err := x.ModelStep(context.Background(), e, b, make([]float64, req.Parameters()))
	if err != nil {
		t.Fatal(err)
	}
	counts, g, err := req.DecodeModel(c.Vector)
	if err != nil {
		t.Fatal(err)
	}
	var n, events int64
	if err := st.DB().QueryRow(`SELECT count(*), sum(y) FROM (
		SELECT p.*, e.method, CASE WHEN e.outcome IN ('work', 'studies') THEN 1 ELSE 0 END AS y,
		       year(e.start_date) - p.birth_year AS age
		FROM participant p JOIN episode e USING (participant_key)
		WHERE e.exit_date BETWEEN DATE '2020-04-01' AND DATE '2022-09-30' AND e.exit_reason <> 'misregistered'
		QUALIFY row_number() OVER (PARTITION BY p.participant_key ORDER BY e.exit_date, e.start_date, e.method) = 1)
		WHERE age BETWEEN 16 AND 64 AND born_abroad IS NOT NULL`).Scan(&n, &events); err != nil {
		t.Fatal(err)
	}
	if counts.N != n || counts.Events != events || g.N != n {
		t.Fatalf("model counts %d (%d events), plugin %d; the oracle %d (%d)", counts.N, counts.Events, g.N, n, events)
	}
	// At β = 0 every weight is 1/4: X'WX[0][0] is n/4 to the fixed point's precision.
	if d := g.XtWX[0] - float64(n)/4; d > 1e-6 || d < -1e-6 {
		t.Fatalf("X'WX[0][0] = %v for n %d", g.XtWX[0], n)
	}

	small, _, cat2 := newAnalysisExecutor(t, 6)
	e2, _ := cat2.Get("what_works")
	if _, err := small.ModelStep(context.Background(), e2, mustBind(t, e2), make([]float64, req.Parameters())); !errors.Is(err, analysis.ErrModelCheck) {
		t.Fatalf("a node of six participants stepped: %v", err)
	}
}
