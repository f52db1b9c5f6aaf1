package disclosure

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"gopkg.in/yaml.v3"
)

func TestDefaultPTableHasDocumentedProperties(t *testing.T) {
	pt := Defaults().PTable()
	if pt.D != 2 || pt.V != 1 || pt.IMax != 3 {
		t.Fatalf("D=%d V=%g IMax=%d", pt.D, pt.V, pt.IMax)
	}
	for i := 1; i <= pt.IMax; i++ {
		var sum, mean, sq float64
		for _, e := range pt.rows[i] {
			if e.J < 0 {
				t.Fatalf("i=%d: negative result %d", i, e.J)
			}
			if e.V < -2 || e.V > 2 {
				t.Fatalf("i=%d: deviation %d", i, e.V)
			}
			sum += e.P
			mean += e.P * float64(e.V)
			sq += e.P * float64(e.V*e.V)
		}
		if math.Abs(sum-1) > 1e-12 || math.Abs(mean) > 1e-9 || math.Abs(sq-1) > 1e-9 {
			t.Errorf("i=%d: sum %g mean %g variance %g", i, sum, mean, sq)
		}
	}
	// The symmetric row has the closed form p(±2) = p(±1)^4 / p(0)^3 with a = 6^(-1/4).
	a := math.Pow(6, -0.25)
	p0 := 1 / (1 + 2*a + 2*a*a*a*a)
	if got := pt.rows[3][2].P; math.Abs(got-p0) > 1e-9 {
		t.Errorf("p(0) = %g, want %g", got, p0)
	}
}

func TestPTableCSVRoundTripAndRejects(t *testing.T) {
	pt := Defaults().PTable()
	var buf bytes.Buffer
	if err := pt.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := LoadPTableCSV(bytes.NewReader(buf.Bytes()), "ptable.csv")
	if err != nil {
		t.Fatal(err)
	}
	for n := int64(0); n < 40; n++ {
		for _, k := range []uint32{0, 1 << 30, 1 << 31, 3 << 30, math.MaxUint32} {
			if a, b := pt.Perturb(n, k), back.Perturb(n, k); a != b {
				t.Fatalf("n=%d key=%d: %d vs %d", n, k, a, b)
			}
		}
	}
	if math.Abs(back.V-1) > 1e-9 || back.D != 2 {
		t.Fatalf("loaded D=%d V=%g", back.D, back.V)
	}
	bad := map[string]string{
		"missing column": "i,j,p,v,p_int_lb\n0,0,1,0,0\n",
		"negative j":     "i,j,p,v,p_int_lb,p_int_ub\n0,0,1,0,0,1\n1,-1,1,-2,0,1\n",
		"j not i+v":      "i,j,p,v,p_int_lb,p_int_ub\n0,0,1,0,0,1\n1,3,1,1,0,1\n",
		"sum not one":    "i,j,p,v,p_int_lb,p_int_ub\n0,0,1,0,0,1\n1,1,0.5,0,0,0.5\n",
		"gap in counts":  "i,j,p,v,p_int_lb,p_int_ub\n0,0,1,0,0,1\n2,2,1,0,0,1\n",
		"not a number":   "i,j,p,v,p_int_lb,p_int_ub\n0,0,x,0,0,1\n",
	}
	for name, text := range bad {
		if _, err := LoadPTableCSV(strings.NewReader(text), "bad.csv"); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.HasPrefix(err.Error(), "bad.csv") {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
}

func TestPolicyCanOnlyBeStricter(t *testing.T) {
	if err := Defaults().Check(); err != nil {
		t.Fatal(err)
	}
	stricter := Defaults()
	stricter.Threshold, stricter.MeanMinN, stricter.DominanceShare = 10, 20, 0.7
	if err := stricter.Check(); err != nil {
		t.Fatalf("stricter refused: %v", err)
	}
	for name, mutate := range map[string]func(*Policy){
		"threshold":   func(p *Policy) { p.Threshold = 3 },
		"sparsity":    func(p *Policy) { p.MaxSuppressedShare = 0.9 },
		"mean n":      func(p *Policy) { p.MeanMinN = 5 },
		"dominance":   func(p *Policy) { p.DominanceShare = 0.95 },
		"dominance n": func(p *Policy) { p.DominanceN = 1 },
		"variance":    func(p *Policy) { p.Variance = 0.5; p.ptable = nil },
	} {
		p := Defaults()
		mutate(&p)
		if err := p.Check(); !errors.Is(err, ErrLooser) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// aggregate builds the input Protect takes from participants' record keys grouped by one
// dimension, as a node's executor would.
func aggregate(t testing.TB, groups map[string][]uint32, withMeasure map[string][]float64) arrow.Record {
	t.Helper()
	fields := []arrow.Field{
		{Name: "g", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: ColN, Type: arrow.PrimitiveTypes.Int64},
		{Name: ColCellKey, Type: arrow.PrimitiveTypes.Int64},
		{Name: "m" + SuffixSum, Type: arrow.PrimitiveTypes.Float64},
		{Name: "m" + SuffixAbs, Type: arrow.PrimitiveTypes.Float64},
		{Name: "m" + SuffixTop1, Type: arrow.PrimitiveTypes.Float64},
		{Name: "m" + SuffixTop2, Type: arrow.PrimitiveTypes.Float64},
		{Name: "m" + SuffixCount, Type: arrow.PrimitiveTypes.Int64},
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrow.NewSchema(fields, nil))
	defer b.Release()
	for g, keys := range groups {
		if g == Total {
			b.Field(0).AppendNull()
		} else {
			b.Field(0).(*array.StringBuilder).Append(g)
		}
		b.Field(1).(*array.Int64Builder).Append(int64(len(keys)))
		b.Field(2).(*array.Int64Builder).Append(int64(CellKey(keys...)))
		vals := withMeasure[g]
		var sum, abs, t1, t2 float64
		for _, v := range vals {
			sum += v
			abs += math.Abs(v)
			switch {
			case math.Abs(v) > t1:
				t1, t2 = math.Abs(v), t1
			case math.Abs(v) > t2:
				t2 = math.Abs(v)
			}
		}
		b.Field(3).(*array.Float64Builder).Append(sum)
		b.Field(4).(*array.Float64Builder).Append(abs)
		b.Field(5).(*array.Float64Builder).Append(t1)
		b.Field(6).(*array.Float64Builder).Append(t2)
		b.Field(7).(*array.Int64Builder).Append(int64(len(vals)))
	}
	return b.NewRecord()
}

func keys(r *rand.Rand, n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = r.Uint32()
	}
	return out
}

type released struct {
	n          int64
	suppressed bool
	mean       *float64
}

func protectMap(t testing.TB, rec arrow.Record, spec Spec, pol Policy) (map[string]released, Report, error) {
	t.Helper()
	out, rep, err := Protect(memory.DefaultAllocator, rec, spec, pol)
	if err != nil {
		return nil, rep, err
	}
	defer out.Release()
	m := map[string]released{}
	g := out.Column(0).(*array.String)
	n := out.Column(1).(*array.Int64)
	s := out.Column(2).(*array.Boolean)
	var meas *array.Float64
	if out.NumCols() > 3 {
		meas = out.Column(3).(*array.Float64)
	}
	for i := 0; i < int(out.NumRows()); i++ {
		r := released{n: n.Value(i), suppressed: s.Value(i)}
		if n.IsNull(i) != r.suppressed {
			t.Fatalf("cell %s: null n %v but suppressed %v", g.Value(i), n.IsNull(i), r.suppressed)
		}
		if meas != nil && !meas.IsNull(i) {
			v := meas.Value(i)
			r.mean = &v
		}
		m[g.Value(i)] = r
	}
	return m, rep, nil
}

func TestNoReleasedCountIsBetweenOneAndFour(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pol := Defaults()
	pol.MaxSuppressedShare = 0.5
	for trial := 0; trial < 300; trial++ {
		groups := map[string][]uint32{}
		var domain []string
		for g := 0; g < 12; g++ {
			name := string(rune('a' + g))
			domain = append(domain, name)
			if g == 11 {
				continue // an empty cell in the frame
			}
			groups[name] = keys(r, 5+r.IntN(40))
		}
		groups[Other] = keys(r, 1+r.IntN(4)) // a small cell of values outside the domain
		spec := Spec{Dimensions: []Dimension{{Name: "g", Domain: domain}}}
		got, _, err := protectMap(t, aggregate(t, groups, nil), spec, pol)
		if err != nil {
			t.Fatal(err)
		}
		for g, c := range got {
			if !c.suppressed && c.n >= 1 && c.n <= 4 {
				t.Fatalf("cell %s released %d", g, c.n)
			}
			if !c.suppressed && c.n == 0 {
				t.Fatalf("cell %s released a non-structural zero", g)
			}
			if truth := len(groups[g]); truth < 5 && !c.suppressed {
				t.Fatalf("cell %s of %d participants released as %d", g, truth, c.n)
			}
		}
		if !got["l"].suppressed || !got[Other].suppressed {
			t.Fatalf("the empty cell and the 1–4 cell must be suppressed: %+v %+v", got["l"], got[Other])
		}
	}
}

func TestStructuralZerosShowAsZero(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	groups := map[string][]uint32{"a": keys(r, 30)}
	spec := Spec{Dimensions: []Dimension{{Name: "g", Domain: []string{"a", "b", "c"}}},
		Structural: func(c map[string]string) bool { return c["g"] == "c" }}
	pol := Defaults()
	got, rep, err := protectMap(t, aggregate(t, groups, nil), spec, pol)
	if err != nil {
		t.Fatal(err)
	}
	if got["c"].suppressed || got["c"].n != 0 || !got["b"].suppressed || rep.StructuralZeros != 1 {
		t.Fatalf("%+v %+v", got, rep)
	}
}

func TestNoiseIsBoundedDeterministicAndUnbiased(t *testing.T) {
	pt := Defaults().PTable()
	r := rand.New(rand.NewPCG(5, 6))
	const cells = 200_000
	var sum, sq float64
	for i := 0; i < cells; i++ {
		n := int64(3 + r.IntN(500))
		k := r.Uint32()
		v := pt.Perturb(n, k)
		if v != pt.Perturb(n, k) {
			t.Fatal("same count and key gave different noise")
		}
		d := float64(v - n)
		if math.Abs(d) > 2 {
			t.Fatalf("noise %g", d)
		}
		sum += d
		sq += d * d
	}
	mean, variance := sum/cells, sq/cells-(sum/cells)*(sum/cells)
	if math.Abs(mean) > 0.01 || math.Abs(variance-1) > 0.02 {
		t.Fatalf("mean noise %g, variance %g", mean, variance)
	}
}

func TestSameParticipantsGetTheSameNoiseInDifferentQueries(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	pol := Defaults()
	for trial := 0; trial < 200; trial++ {
		set := keys(r, 5+r.IntN(60))
		shuffled := append([]uint32{}, set...)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		q1, _, err := protectMap(t, aggregate(t, map[string][]uint32{"women_2021": set}, nil), Spec{Dimensions: []Dimension{{Name: "g"}}}, pol)
		if err != nil {
			t.Fatal(err)
		}
		q2, _, err := protectMap(t, aggregate(t, map[string][]uint32{"hbs_exits": shuffled}, nil), Spec{Dimensions: []Dimension{{Name: "g"}}}, pol)
		if err != nil {
			t.Fatal(err)
		}
		if q1["women_2021"] != q2["hbs_exits"] {
			t.Fatalf("same participants, different release: %+v vs %+v", q1["women_2021"], q2["hbs_exits"])
		}
	}
}

func TestDifferencingDoesNotSingleAnyoneOut(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	pt := Defaults().PTable()
	const pairs = 20_000
	exact := 0
	for i := 0; i < pairs; i++ {
		set := keys(r, 10+r.IntN(200))
		extra := r.Uint32()
		a := pt.Perturb(int64(len(set)), CellKey(set...))
		b := pt.Perturb(int64(len(set)+1), CellKey(append(set, extra)...))
		if b-a == 1 {
			exact++
		}
	}
	if share := float64(exact) / pairs; share > 0.5 {
		t.Fatalf("the difference revealed the extra participant in %.0f %% of pairs", 100*share)
	}
}

func TestMeansNeedTenAndPassDominance(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	groups := map[string][]uint32{"small": keys(r, 7), "even": keys(r, 40), "dominated": keys(r, 40)}
	values := map[string][]float64{"small": {1, 2, 3, 4, 5, 6, 7}, "dominated": {1000, 900}}
	for i := 0; i < 40; i++ {
		values["even"] = append(values["even"], float64(5+i%4))
	}
	for i := 0; i < 38; i++ {
		values["dominated"] = append(values["dominated"], 1)
	}
	spec := Spec{Dimensions: []Dimension{{Name: "g"}}, Measures: []Measure{{Name: "m", Agg: "mean"}}}
	pol := Defaults()
	pol.MaxSuppressedShare = 0.5
	got, rep, err := protectMap(t, aggregate(t, groups, values), spec, pol)
	if err != nil {
		t.Fatal(err)
	}
	if got["small"].mean != nil || got["dominated"].mean != nil || got["even"].mean == nil {
		t.Fatalf("means: small %v dominated %v even %v", got["small"].mean, got["dominated"].mean, got["even"].mean)
	}
	if *got["even"].mean != 6.5 || rep.MeasuresSuppressed != 2 {
		t.Fatalf("even mean %g, report %+v", *got["even"].mean, rep)
	}
}

func TestSparseTablesAreRefusedWhole(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	groups := map[string][]uint32{"a": keys(r, 50), "b": keys(r, 2), "c": keys(r, 1), "d": keys(r, 3)}
	_, rep, err := protectMap(t, aggregate(t, groups, nil), Spec{Dimensions: []Dimension{{Name: "g"}}}, Defaults())
	if !errors.Is(err, ErrTooSparse) || rep.SuppressedNonEmpty != 3 {
		t.Fatalf("err %v report %+v", err, rep)
	}
}

func TestTotalsAreProtectedCellsOfTheirOwn(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	a, b := keys(r, 20), keys(r, 3)
	groups := map[string][]uint32{"a": a, "b": b, Total: append(append([]uint32{}, a...), b...)}
	spec := Spec{Dimensions: []Dimension{{Name: "g", Domain: []string{"a", "b"}}}, Totals: true}
	got, _, err := protectMap(t, aggregate(t, groups, nil), spec, Defaults())
	if err != nil {
		t.Fatal(err)
	}
	tot := got[Total]
	if tot.suppressed || tot.n < 21 || tot.n > 25 || !got["b"].suppressed {
		t.Fatalf("total %+v, b %+v", tot, got["b"])
	}
}

func TestRecordKeysDependOnTheSecret(t *testing.T) {
	k1 := RecordKey([]byte("secret-one"), "abc")
	if k1 != RecordKey([]byte("secret-one"), "abc") {
		t.Fatal("record key not stable")
	}
	if k1 == RecordKey([]byte("secret-two"), "abc") || k1 == RecordKey([]byte("secret-one"), "abd") {
		t.Fatal("record key ignores its inputs")
	}
}

func TestValuesOutsideTheDomainAreNeverReleased(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	groups := map[string][]uint32{"a": keys(r, 20), "3f9a0c1d2e": keys(r, 1)}
	spec := Spec{Dimensions: []Dimension{{Name: "g", Domain: []string{"a", "b"}}}}
	if _, _, err := protectMap(t, aggregate(t, groups, nil), spec, Defaults()); err == nil {
		t.Fatal("a dimension value outside the code list was released")
	}
}

func TestPolicyYAMLStartsFromDefaults(t *testing.T) {
	var p Policy
	if err := yaml.Unmarshal([]byte("threshold: 10\n"), &p); err != nil {
		t.Fatal(err)
	}
	if p.Threshold != 10 || p.MeanMinN != 10 || p.DominanceShare != 0.85 || p.Check() != nil {
		t.Fatalf("%+v: %v", p, p.Check())
	}
	if err := yaml.Unmarshal([]byte("treshold: 10\n"), &p); err == nil {
		t.Fatal("a misspelt field was accepted")
	}
	if err := yaml.Unmarshal([]byte("threshold: 3\n"), &p); err != nil || !errors.Is(p.Check(), ErrLooser) {
		t.Fatalf("looser policy: %v", p.Check())
	}
}
