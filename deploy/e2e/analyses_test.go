package e2e

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/marcboeker/go-duckdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/fanout"
	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/wire"
)

// exportsDB opens an in-memory DuckDB over the federation's synthetic exports, with the
// participants and episodes of every association keyed by (association, person): the
// oracle's own reading of the files, independent of the importer and the node.
func exportsDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, stmt := range []string{
		`SET autoinstall_known_extensions = false`,
		`CREATE TABLE p AS SELECT regexp_extract(filename, '([^/]+)/participant\.csv$', 1) AS assoc,
			coalesce(personnummer, anonymous_id) AS pid, * FROM read_csv('` + dir + `/*/participant.csv', all_varchar = true, filename = true)`,
		`CREATE TABLE e AS SELECT regexp_extract(filename, '([^/]+)/episode\.csv$', 1) AS assoc,
			coalesce(personnummer, anonymous_id) AS pid, * FROM read_csv('` + dir + `/*/episode.csv', all_varchar = true, filename = true)`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	return db
}

func TestAnalysesRunPooledAndTheModelMatchesStatsmodels(t *testing.T) {
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import statsmodels").CombinedOutput(); err != nil {
		if os.Getenv("SAMSYN_REQUIRE_STATSMODELS") != "" {
			t.Fatalf("statsmodels: %v: %s", err, out)
		}
		t.Skipf("statsmodels is not installed (apt-get install python3-statsmodels): %s", out)
	}
	f := startInProc(t, 0)
	ctx := context.Background()
	period := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	s, err := f.coord.Submit(ctx, &study.Request{Title: "Analyser", Purpose: "e2e", OnNodeFailure: study.OnFailurePartial,
		Queries: []study.QueryReq{{ID: "what_works", Params: period}, {ID: "time_to_work", Params: period}, {ID: "pathways", Params: period}}}, "evaluator")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, s)
	if done := f.wait(t, s.ID); done.State != study.Released {
		tr, _ := f.store.Transitions(ctx, s.ID)
		ds, _ := f.store.Dispatches(ctx, s.ID)
		for _, d := range ds {
			t.Logf("dispatch %d %s %s %s", d.QueryIndex, d.Association, d.State, d.Error)
		}
		t.Fatalf("study ended %s: %+v", done.State, tr)
	}
	results, err := f.store.Results(ctx, s.ID)
	if err != nil || len(results) != 3 {
		t.Fatalf("%d results: %v", len(results), err)
	}
	db := exportsDB(t, filepath.Join(f.dir, "exports"))

	// The model against statsmodels on the pooled complete cases, selected by hand-written SQL.
	e, _ := f.coord.Catalog().Get("what_works")
	req := e.Request(mustBind(t, e, period))
	rows := filepath.Join(t.TempDir(), "rows.csv")
	_, err = db.Exec(`COPY (
		SELECT e.method, p.referral_party, p.gender,
		  CASE WHEN a BETWEEN 16 AND 24 THEN '16-24' WHEN a BETWEEN 25 AND 34 THEN '25-34' WHEN a BETWEEN 35 AND 44 THEN '35-44'
		       WHEN a BETWEEN 45 AND 54 THEN '45-54' WHEN a BETWEEN 55 AND 64 THEN '55-64' END AS age_band,
		  p.education, CASE p.born_abroad WHEN 'true' THEN 'yes' WHEN 'false' THEN 'no' END AS born_abroad,
		  p.years_on_public_support, CASE WHEN e.outcome IN ('work', 'studies') THEN 1 ELSE 0 END AS y
		FROM p JOIN (SELECT *, year(CAST(start_date AS DATE)) AS sy FROM e) e USING (assoc, pid),
		     LATERAL (SELECT e.sy - CAST(p.birth_year AS INTEGER) AS a)
		WHERE CAST(e.exit_date AS DATE) BETWEEN DATE '2020-04-01' AND DATE '2022-09-30' AND e.exit_reason <> 'misregistered'
		QUALIFY row_number() OVER (PARTITION BY assoc, pid ORDER BY CAST(e.exit_date AS DATE), CAST(e.start_date AS DATE), e.method) = 1
	) TO '` + rows + `' (HEADER)`)
	if err != nil {
		t.Fatal(err)
	}
	// complete cases only, as the model defines them
	if _, err := db.Exec(`COPY (SELECT * FROM read_csv('` + rows + `', all_varchar = true) WHERE age_band IS NOT NULL AND born_abroad IS NOT NULL) TO '` + rows + `.cc' (HEADER)`); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(req.Predictors)
	specFile := filepath.Join(t.TempDir(), "spec.json")
	os.WriteFile(specFile, spec, 0o644)
	out, err := exec.Command(py, "testdata/statsmodels_logit.py", rows+".cc", specFile).CombinedOutput()
	if err != nil {
		t.Fatalf("statsmodels: %v: %s", err, out)
	}
	var want map[string][2]float64
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatalf("statsmodels output %q: %v", out, err)
	}
	var checked int
	for _, r := range results {
		rec, err := coordinator.Decode(r.Release)
		if err != nil {
			t.Fatal(err)
		}
		e, _ := f.coord.Catalog().Get(r.QueryID)
		tbl := readTable(t, e, rec)
		switch r.QueryID {
		case "what_works":
			var ch coordinator.Checks
			json.Unmarshal(r.Checks, &ch)
			if ch.Model == nil || !ch.Model.Converged || len(ch.Associations) != 8 {
				t.Fatalf("model %+v over %v", ch.Model, ch.Associations)
			}
			or := map[string][3]float64{}
			for i := 0; i < tbl.Len(); i++ {
				c := tbl.Cell(i)
				w, ok := want[c.Dims[0]]
				if !ok {
					t.Fatalf("term %s is not in statsmodels' design", c.Dims[0])
				}
				coef, se := *c.Measures[0], *c.Measures[1]
				if math.Abs(coef-w[0]) > 1e-6 || math.Abs(se-w[1]) > 1e-6 {
					t.Errorf("%s: coefficient %.9f se %.9f, statsmodels %.9f %.9f", c.Dims[0], coef, se, w[0], w[1])
				}
				or[c.Dims[0]] = [3]float64{*c.Measures[4], *c.Measures[5], *c.Measures[6]}
				checked++
			}
			if checked != len(want) {
				t.Fatalf("%d terms, statsmodels has %d", checked, len(want))
			}
			// The effects the synthetic data was built with: the employment methods beat
			// pre-rehabilitation (the reference) clearly.
			for _, m := range []string{"method=SE", "method=IPS"} {
				if or[m][1] <= 1 {
					t.Errorf("%s: odds ratio %.2f (%.2f–%.2f), expected clearly above 1", m, or[m][0], or[m][1], or[m][2])
				}
			}
			t.Logf("model: %d participants, %d iterations; OR SE %.2f, IPS %.2f", ch.Model.N, ch.Model.Iterations, or["method=SE"][0], or["method=IPS"][0])
		case "time_to_work":
			// Every released interval has at least 10 at risk; the curve never rises; the
			// whole federation's start count is the true count within the nodes' noise.
			var truth int64
			if err := db.QueryRow(`SELECT count(*) FROM (SELECT DISTINCT assoc, pid FROM e
				WHERE CAST(start_date AS DATE) BETWEEN DATE '2020-04-01' AND DATE '2022-09-30')`).Scan(&truth); err != nil {
				t.Fatal(err)
			}
			prev := map[string]float64{}
			var total int64 = -1
			for i := 0; i < tbl.Len(); i++ {
				c := tbl.Cell(i)
				if c.Suppressed {
					continue
				}
				if *c.N < disclosure.SurvivalThreshold {
					t.Errorf("an interval with %d at risk was released", *c.N)
				}
				sv := *c.Measures[3]
				if p, ok := prev[c.Dims[0]]; ok && sv > p+1e-12 {
					t.Errorf("%s: survival rises from %v to %v", c.Dims[0], p, sv)
				}
				prev[c.Dims[0]] = sv
				if c.Dims[0] == disclosure.Total && c.Dims[1] == "0" {
					total = *c.N
				}
			}
			if total < 0 || math.Abs(float64(total-truth)) > 8*37*2*2 {
				t.Errorf("the federation's curve starts with %d at risk, truth %d", total, truth)
			}
		case "pathways":
			var truth int64
			db.QueryRow(`SELECT count(*) FROM (SELECT DISTINCT assoc, pid FROM e WHERE CAST(start_date AS DATE) BETWEEN DATE '2020-04-01' AND DATE '2022-09-30')`).Scan(&truth)
			for i := 0; i < tbl.Len(); i++ {
				c := tbl.Cell(i)
				if c.Dims[0] == disclosure.Total && c.Dims[1] == disclosure.Total {
					if c.N == nil || math.Abs(float64(*c.N-truth)) > 16 {
						t.Errorf("pathways total %v, truth %d", c.N, truth)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no model released")
	}
}

func mustBind(t *testing.T, e *queries.Entry, params map[string]string) queries.Bound {
	t.Helper()
	b, err := e.Bind(params)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// modelTicket signs a ticket for one step of what_works at node assoc.
func modelTicket(t *testing.T, f *inproc, assoc string, cohort []string, step int, state []float64) []byte {
	t.Helper()
	e, _ := f.coord.Catalog().Get("what_works")
	params := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	nonce, _ := wire.NewNonce()
	raw, err := wire.Sign(wire.Ticket{StudyID: "s-model", QueryID: e.ID, QueryHash: e.Hash(), Params: params,
		CatalogSignature: f.signatures.Signature(e.ID), Association: assoc,
		Approval: ed25519.Sign(f.assocKeys[assoc], wire.ApprovalMessage("s-model", assoc, e.ID, e.Hash(), params)),
		Cohort:   cohort, Round: 1, Step: step, State: state, Nonce: nonce, NotBefore: time.Now().Add(-time.Second), Expires: time.Now().Add(time.Minute)}, f.ticket)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestModelStepsAreBoundedAndAnsweredAtOneSetOfCoefficients(t *testing.T) {
	f := startInProc(t, 200, "hbs", "varna", "roslagen")
	ctx := context.Background()
	e, _ := f.coord.Catalog().Get("what_works")
	p := e.Request(mustBind(t, e, map[string]string{"from": "2020-04-01", "to": "2022-09-30"})).Parameters()
	cohort := []string{"hbs", "roslagen", "varna"}
	var hbs fanout.Node
	for _, n := range f.coord.Nodes() {
		if n.Association == "hbs" {
			hbs = n.Client
		}
	}
	zero, other := make([]float64, p), make([]float64, p)
	other[0] = 0.5
	if _, err := hbs.Get(ctx, modelTicket(t, f, "hbs", cohort, 1, zero)); err != nil {
		t.Fatalf("step 1: %v", err)
	}
	if _, err := hbs.Get(ctx, modelTicket(t, f, "hbs", cohort, 1, zero)); err != nil {
		t.Fatalf("step 1 again at the same coefficients (a repeat): %v", err)
	}
	for _, c := range []struct {
		step   int
		state  []float64
		reason string
	}{{1, other, "step_replayed"}, {e.Analysis.Iterations() + 1, zero, "step_limit"}} {
		_, err := hbs.Get(ctx, modelTicket(t, f, "hbs", cohort, c.step, c.state))
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("step %d: %v, expected a refusal %s", c.step, err, c.reason)
		}
	}
}

// TestAModelThatFailsANodesCheckLeavesNothing: with six participants per node every node's
// model check fires; no node sends any statistic, each audits its refusal, and the study
// releases nothing.
func TestAModelThatFailsANodesCheckLeavesNothing(t *testing.T) {
	f := startInProc(t, 6, "hbs", "varna", "roslagen")
	ctx := context.Background()
	period := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	s, err := f.coord.Submit(ctx, &study.Request{Title: "Liten modell", Purpose: "e2e", OnNodeFailure: study.OnFailurePartial,
		Queries: []study.QueryReq{{ID: "what_works", Params: period}}}, "evaluator")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, s)
	if done := f.wait(t, s.ID); done.State != study.Failed {
		t.Fatalf("study ended %s", done.State)
	}
	ds, _ := f.store.Dispatches(ctx, s.ID)
	for _, d := range ds {
		if d.State == state.DispatchReleased || len(d.Release) > 0 {
			t.Errorf("%s sent model statistics", d.Association)
		}
	}
	if res, _ := f.store.Results(ctx, s.ID); len(res) > 0 {
		t.Errorf("%d results released", len(res))
	}
	for _, assoc := range []string{"hbs", "varna", "roslagen"} {
		raw, _ := os.ReadFile(filepath.Join(f.dir, "nodes", assoc, "audit.log"))
		if !strings.Contains(string(raw), `"reason":"model_check"`) {
			t.Errorf("%s did not audit its model check", assoc)
		}
		if strings.Contains(string(raw), `"action":"contribute"`) {
			t.Errorf("%s contributed to a model its check refused", assoc)
		}
	}
}

// TestSurvivalByAssociationMarksARefusingAssociationMissing: the refusing association's
// stratum is one row marked missing, never a curve of nobody; the others' curves are released.
func TestSurvivalByAssociationMarksARefusingAssociationMissing(t *testing.T) {
	f := startInProc(t, 200, "hbs", "varna", "roslagen")
	ctx := context.Background()
	s, err := f.coord.Submit(ctx, &study.Request{Title: "Tid per förbund", Purpose: "e2e", OnNodeFailure: study.OnFailurePartial,
		Queries: []study.QueryReq{{ID: "time_to_work_by_association", Params: map[string]string{"from": "2020-04-01", "to": "2022-09-30"}}}}, "evaluator")
	if err != nil {
		t.Fatal(err)
	}
	f.approveAll(t, s, "roslagen")
	if done := f.wait(t, s.ID); done.State != study.Released {
		t.Fatalf("study ended %s", done.State)
	}
	res, _ := f.store.Results(ctx, s.ID)
	rec, err := coordinator.Decode(res[0].Release)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := f.coord.Catalog().Get("time_to_work_by_association")
	tbl := readTable(t, e, rec)
	seen := map[string]int{}
	for i := 0; i < tbl.Len(); i++ {
		c := tbl.Cell(i)
		seen[c.Dims[0]]++
		switch c.Dims[0] {
		case "roslagen":
			if !c.Missing || c.N != nil {
				t.Errorf("the refusing association's stratum: missing %v, n %v", c.Missing, c.N)
			}
		case "hbs", "varna", disclosure.Total:
			if c.Missing || c.N == nil || *c.N < disclosure.SurvivalThreshold {
				t.Errorf("%s month %s: missing %v, n %v", c.Dims[0], c.Dims[1], c.Missing, c.N)
			}
		default:
			t.Errorf("a stratum of an association outside the federation: %s", c.Dims[0])
		}
	}
	if seen["roslagen"] != 1 || seen["hbs"] < 2 || seen["varna"] < 2 {
		t.Fatalf("rows per stratum %v", seen)
	}
}
