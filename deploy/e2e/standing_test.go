package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/queries/audit"
)

// cellsOf reads a released result's cells as "dims -> n" (nil for a withheld n).
func cellsOf(t *testing.T, f *inproc, id, query string) map[string]string {
	t.Helper()
	results, err := f.store.Results(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.QueryID != query {
			continue
		}
		rec, err := coordinator.Decode(r.Release)
		if err != nil {
			t.Fatal(err)
		}
		e, _ := f.coord.Catalog().Get(query)
		tbl := readTable(t, e, rec)
		out := map[string]string{}
		for i := 0; i < tbl.Len(); i++ {
			c := tbl.Cell(i)
			v := "-"
			if c.Missing {
				v = "missing"
			} else if c.N != nil {
				v = itoa(*c.N)
			}
			out[strings.Join(c.Dims, "|")] = v
		}
		return out
	}
	t.Fatalf("study %s has no result for %s", id, query)
	return nil
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestAStandingStudyRerunsOnItsApprovalsUntilTheyEnd: approved once; a rerun is a release
// of its own, audited at every node, identical to the first on identical data; nothing is
// due while nothing changed; a revoked association is no longer asked (and is shown as
// missing); after the approvals' last day nothing reruns.
func TestAStandingStudyRerunsOnItsApprovalsUntilTheyEnd(t *testing.T) {
	f := startInProc(t, 150, "hbs", "varna", "roslagen")
	ctx := context.Background()
	period := map[string]string{"from": "2020-04-01", "to": "2022-09-30"}
	s, err := f.coord.Submit(ctx, &study.Request{Title: "Stående", Purpose: "e2e", OnNodeFailure: study.OnFailurePartial,
		Standing: &study.StandingReq{Months: 12, Schedule: study.ScheduleNewData},
		Queries:  []study.QueryReq{{ID: "targets_by_association", Params: period}}}, "evaluator")
	if err != nil {
		t.Fatal(err)
	}
	if s.Standing == nil || s.Standing.Until.Before(time.Now().AddDate(0, 11, 0)) {
		t.Fatalf("standing terms %+v", s.Standing)
	}
	f.approveAll(t, s)
	if got := f.wait(t, s.ID); got.State != study.Released {
		t.Fatalf("first release: %s", got.State)
	}
	first := cellsOf(t, f, s.ID, "targets_by_association")

	// The data has not changed: nothing is due.
	if ids, err := f.coord.RerunStanding(ctx, time.Now(), false); err != nil || len(ids) != 0 {
		t.Fatalf("a rerun without new data: %v %v", ids, err)
	}
	ids, err := f.coord.RerunStanding(ctx, time.Now(), true)
	if err != nil || len(ids) != 1 || ids[0] != s.ID+"-r1" {
		t.Fatalf("a forced rerun: %v %v", ids, err)
	}
	if got := f.wait(t, ids[0]); got.State != study.Released || got.Parent != s.ID || got.Run != 1 {
		t.Fatalf("run 1: %s %+v", got.State, got)
	}
	second := cellsOf(t, f, ids[0], "targets_by_association")
	if len(first) == 0 || !mapsEqual(first, second) {
		t.Fatalf("the same data gave another release:\n%v\n%v", first, second)
	}
	for _, assoc := range []string{"hbs", "varna", "roslagen"} {
		runs := map[string]bool{}
		audit.ScanFile(filepath.Join(f.dir, "nodes", assoc, "audit.log"), func(e audit.Entry) {
			if e.Fields["study"] == s.ID && (e.Action == "contribute" || e.Action == "release") {
				runs[e.Fields["run"]] = true
			}
		})
		if !runs["0"] || !runs["1"] {
			t.Errorf("%s audited runs %v, want 0 and 1", assoc, runs)
		}
	}

	// Roslagen withdraws: the next run asks the other two, and Roslagen's row is missing.
	if err := f.coord.Revoke(ctx, s.ID, "roslagen"); err != nil {
		t.Fatal(err)
	}
	if err := f.coord.Revoke(ctx, s.ID, "roslagen"); err == nil {
		t.Fatal("a second revocation")
	}
	ids, err = f.coord.RerunStanding(ctx, time.Now(), true)
	if err != nil || len(ids) != 1 {
		t.Fatalf("run 2: %v %v", ids, err)
	}
	run2 := f.wait(t, ids[0])
	if run2.State != study.Released || slices.Contains(run2.Associations, "roslagen") {
		t.Fatalf("run 2 asked %v (%s)", run2.Associations, run2.State)
	}
	if cells := cellsOf(t, f, ids[0], "targets_by_association"); cells["roslagen|_total"] != "missing" {
		t.Fatalf("run 2 shows roslagen as %q", cells["roslagen|_total"])
	}
	raw, _ := os.ReadFile(filepath.Join(f.dir, "nodes", "roslagen", "audit.log"))
	if strings.Contains(string(raw), `"run":"2"`) {
		t.Error("roslagen answered run 2 after revoking")
	}

	// After the approvals' last day nothing reruns.
	if ids, err := f.coord.RerunStanding(ctx, s.Standing.Until.Add(24*time.Hour), true); err != nil || len(ids) != 0 {
		t.Fatalf("a rerun after the approvals ended: %v %v", ids, err)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
