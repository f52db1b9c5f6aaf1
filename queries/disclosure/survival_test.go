package disclosure

import (
	"math"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

func TestProtectSurvivalPoolsTheTailAndSuppressesSmallStrata(t *testing.T) {
	l, err := NewLayout(Spec{Totals: true, Dimensions: []Dimension{
		{Name: "method", Domain: []string{"a", "b"}},
		{Name: "month", Domain: []string{"0", "1", "2", "3"}},
		{Name: "status", Domain: []string{"event", "censored"}}}})
	if err != nil {
		t.Fatal(err)
	}
	vec := make([]uint64, l.Len())
	// Each cell and, as a node's margins would, the total stratum's cell beside it.
	set := func(n int64, dims ...string) {
		vec[l.index[strings.Join(dims, "\x00")]*l.Stride()] = uint64(n)
		tot := append([]string{Total}, dims[1:]...)
		vec[l.index[strings.Join(tot, "\x00")]*l.Stride()] += uint64(n)
	}
	// a: events 3, 2, 0, 1 and censored 1, 0, 4, 3 in months 0–3: at risk 14, 10, 8, 4.
	for m, ev := range []int64{3, 2, 0, 1} {
		set(ev, "a", []string{"0", "1", "2", "3"}[m], "event")
	}
	for m, ce := range []int64{1, 0, 4, 3} {
		set(ce, "a", []string{"0", "1", "2", "3"}[m], "censored")
	}
	// b: five in all, fewer than 10 from the start.
	set(2, "b", "0", "event")
	set(3, "b", "2", "censored")
	out, rep, err := ProtectSurvival(memory.NewGoAllocator(), l, vec, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	type row struct {
		strat, month string
		n            int64
		supp         bool
		vals         []float64
	}
	var rows []row
	for i := 0; i < int(out.NumRows()); i++ {
		r := row{strat: out.Column(0).(*array.String).Value(i), month: out.Column(1).(*array.String).Value(i), supp: out.Column(3).(*array.Boolean).Value(i)}
		if !out.Column(2).IsNull(i) {
			r.n = out.Column(2).(*array.Int64).Value(i)
		}
		for j := 4; j < 4+len(SurvivalMeasures); j++ {
			v := math.NaN()
			if !out.Column(j).IsNull(i) {
				v = out.Column(j).(*array.Float64).Value(i)
			}
			r.vals = append(r.vals, v)
		}
		rows = append(rows, r)
	}
	byKey := map[string]row{}
	for _, r := range rows {
		byKey[r.strat+"/"+r.month] = r
	}
	// a, month 0: 14 at risk, 3 events: S = 11/14. Months 1–3 pooled (10 at risk): 3 events,
	// 7 censored: S = 11/14 · 7/10.
	a0, a1 := byKey["a/0"], byKey["a/1"]
	if a0.n != 14 || a0.vals[1] != 3 || a0.vals[2] != 1 || math.Abs(a0.vals[3]-11.0/14) > 1e-15 {
		t.Errorf("a, month 0: %+v", a0)
	}
	if a1.n != 10 || a1.vals[0] != 3 || a1.vals[1] != 3 || a1.vals[2] != 7 || math.Abs(a1.vals[3]-0.55) > 1e-15 {
		t.Errorf("a, months 1–3: %+v", a1)
	}
	if _, ok := byKey["a/2"]; ok {
		t.Error("a month with fewer than 10 at risk was released on its own")
	}
	// Greenwood's variance and the log-log interval, by hand for month 0.
	s := 11.0 / 14
	se := math.Sqrt(3.0/(14*11)) / math.Abs(math.Log(s))
	lo := math.Exp(-math.Exp(math.Log(-math.Log(s)) + 1.959963984540054*se))
	if math.Abs(a0.vals[4]-lo) > 1e-12 || !(a0.vals[4] < s && s < a0.vals[5]) {
		t.Errorf("a, month 0 interval %v–%v around %v, lower by hand %v", a0.vals[4], a0.vals[5], s, lo)
	}
	if b := byKey["b/0"]; !b.supp || b.n != 0 || !math.IsNaN(b.vals[3]) {
		t.Errorf("a stratum of five: %+v", b)
	}
	if tot := byKey[Total+"/0"]; tot.n != 19 {
		t.Errorf("the total stratum starts with %d at risk, expected 19", tot.n)
	}
	if rep.Suppressed != 1 {
		t.Errorf("report %+v", rep)
	}
	// A stratum only an absent association could fill is missing, not a curve of nobody.
	cover := func(cell map[string]string) (int, int) {
		if cell["method"] == "b" {
			return 1, 0
		}
		return 2, 2
	}
	out2, rep2, err := ProtectSurvival(memory.NewGoAllocator(), l, vec, 10, cover)
	if err != nil {
		t.Fatal(err)
	}
	defer out2.Release()
	missingCol := out2.Schema().FieldIndices(ColMissing)[0]
	for i := 0; i < int(out2.NumRows()); i++ {
		isB := out2.Column(0).(*array.String).Value(i) == "b"
		if out2.Column(missingCol).(*array.Boolean).Value(i) != isB {
			t.Errorf("row %d (%s): missing %v", i, out2.Column(0).(*array.String).Value(i), !isB)
		}
	}
	if rep2.Missing != 1 {
		t.Errorf("report %+v", rep2)
	}
	// Masks that did not cancel are not counts.
	vec[0] = 1 << 62
	if _, _, err := ProtectSurvival(memory.NewGoAllocator(), l, vec, 10, nil); err == nil {
		t.Error("a masked vector was released as a survival table")
	}
}
