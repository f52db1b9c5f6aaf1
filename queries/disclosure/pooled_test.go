package disclosure

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// part is one node's participants in one cell: their record keys and measure values.
type part struct {
	keys []uint32
	vals []float64
}

var pooledSpec = Spec{Dimensions: []Dimension{{Name: "g", Domain: []string{"a", "b", "c"}}},
	Measures: []Measure{{Name: "m", Agg: "mean"}}, Totals: true}

// nodeAggregate builds a node's aggregate as its executor would, margins included.
func nodeAggregate(t testing.TB, cells map[string]part) arrow.Record {
	t.Helper()
	all := part{}
	for _, p := range cells {
		all.keys = append(all.keys, p.keys...)
		all.vals = append(all.vals, p.vals...)
	}
	rows := map[string]part{Total: all}
	for g, p := range cells {
		rows[g] = p
	}
	fields := []arrow.Field{
		{Name: "g", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: ColN, Type: arrow.PrimitiveTypes.Int64},
		{Name: ColCellKey, Type: arrow.PrimitiveTypes.Int64},
		{Name: "m" + SuffixSum, Type: arrow.PrimitiveTypes.Float64},
		{Name: "m" + SuffixAbs, Type: arrow.PrimitiveTypes.Float64},
		{Name: "m" + SuffixCount, Type: arrow.PrimitiveTypes.Int64},
		{Name: "m" + SuffixSq, Type: arrow.PrimitiveTypes.Float64},
		{Name: "m" + SuffixTop1, Type: arrow.PrimitiveTypes.Float64},
		{Name: "m" + SuffixTop2, Type: arrow.PrimitiveTypes.Float64},
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrow.NewSchema(fields, nil))
	defer b.Release()
	for g, p := range rows {
		if len(p.keys) == 0 {
			continue
		}
		if g == Total {
			b.Field(0).AppendNull()
		} else {
			b.Field(0).(*array.StringBuilder).Append(g)
		}
		var sum, abs, sq, t1, t2 float64
		for _, v := range p.vals {
			sum, abs, sq = sum+v, abs+math.Abs(v), sq+v*v
			switch {
			case math.Abs(v) > t1:
				t1, t2 = math.Abs(v), t1
			case math.Abs(v) > t2:
				t2 = math.Abs(v)
			}
		}
		b.Field(1).(*array.Int64Builder).Append(int64(len(p.keys)))
		b.Field(2).(*array.Int64Builder).Append(int64(CellKey(p.keys...)))
		b.Field(3).(*array.Float64Builder).Append(sum)
		b.Field(4).(*array.Float64Builder).Append(abs)
		b.Field(5).(*array.Int64Builder).Append(int64(len(p.vals)))
		b.Field(6).(*array.Float64Builder).Append(sq)
		b.Field(7).(*array.Float64Builder).Append(t1)
		b.Field(8).(*array.Float64Builder).Append(t2)
	}
	return b.NewRecord()
}

func randomPart(r *rand.Rand, n int) part {
	p := part{keys: make([]uint32, n), vals: make([]float64, n)}
	for i := range p.keys {
		p.keys[i] = r.Uint32()
		p.vals[i] = float64(1 + r.IntN(20))
	}
	return p
}

func everyone(map[string]string) (int, int) { return 3, 3 }

type pooledCell struct {
	n                   *int64
	suppressed, missing bool
	mean                *float64
}

func pool(t *testing.T, nodes []map[string]part, exclusive []func(map[string]string) bool, cover Coverage) (map[string]pooledCell, Report, error) {
	t.Helper()
	l, err := NewLayout(pooledSpec)
	if err != nil {
		t.Fatal(err)
	}
	var vecs [][]uint64
	for i, cells := range nodes {
		rec := nodeAggregate(t, cells)
		var ex func(map[string]string) bool
		if exclusive != nil {
			ex = exclusive[i]
		}
		v, _, err := Contribute(rec, l, Defaults(), ex)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
		vecs = append(vecs, v)
	}
	sum := make([]uint64, l.Len())
	for _, v := range vecs {
		for j := range v {
			sum[j] += v[j]
		}
	}
	out, rep, err := ProtectPooled(memory.DefaultAllocator, l, sum, Defaults(), cover)
	if err != nil {
		return nil, rep, err
	}
	defer out.Release()
	res := map[string]pooledCell{}
	for i := 0; i < int(out.NumRows()); i++ {
		var c pooledCell
		if n := out.Column(1).(*array.Int64); !n.IsNull(i) {
			v := n.Value(i)
			c.n = &v
		}
		c.suppressed = out.Column(2).(*array.Boolean).Value(i)
		if m := out.Column(3).(*array.Float64); !m.IsNull(i) {
			v := m.Value(i)
			c.mean = &v
		}
		c.missing = out.Column(4).(*array.Boolean).Value(i)
		res[out.Column(0).(*array.String).Value(i)] = c
	}
	return res, rep, nil
}

// TestPooledReleaseIsTheThresholdedSumOfTheNodesPerturbedCounts checks against a second
// computation: each node's count perturbed from its own record keys with the ptable, summed.
// Cells with a small part at every node are released once pooled.
func TestPooledReleaseIsTheThresholdedSumOfTheNodesPerturbedCounts(t *testing.T) {
	pt := Defaults().PTable()
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		var nodes []map[string]part
		want := map[string]int64{}
		for range 3 {
			cells := map[string]part{"a": randomPart(r, 1+r.IntN(3)), "b": randomPart(r, r.IntN(30))}
			nodes = append(nodes, cells)
			var all []uint32
			for g, p := range cells {
				want[g] += pt.Perturb(int64(len(p.keys)), CellKey(p.keys...))
				all = append(all, p.keys...)
			}
			want[Total] += pt.Perturb(int64(len(all)), CellKey(all...))
		}
		got, _, err := pool(t, nodes, nil, everyone)
		if errors.Is(err, ErrTooSparse) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range []string{"a", "b", "c", Total} {
			c := got[g]
			switch {
			case want[g] < 5 && (!c.suppressed || c.n != nil):
				t.Fatalf("seed %d cell %s: want suppressed (pooled %d), got %+v", seed, g, want[g], c)
			case want[g] >= 5 && (c.suppressed || c.n == nil || *c.n != want[g]):
				t.Fatalf("seed %d cell %s: want %d, got %+v", seed, g, want[g], c)
			}
		}
	}
}

// TestACellOnlyOneNodeCanFillIsProtectedAsItsOwnRelease: for a cell exclusive to one node,
// the pooled release shows what that node's own release shows, and nothing where it shows
// nothing, over many record keys.
func TestACellOnlyOneNodeCanFillIsProtectedAsItsOwnRelease(t *testing.T) {
	spec := pooledSpec
	onlyA := func(c map[string]string) bool { return c["g"] == "a" }
	never := func(map[string]string) bool { return false }
	shown := 0
	for seed := range uint64(400) {
		r := rand.New(rand.NewPCG(seed, 2))
		mine := map[string]part{"a": randomPart(r, 2+r.IntN(10)), "b": randomPart(r, 20)}
		other := map[string]part{"b": randomPart(r, 20)}
		rec := nodeAggregate(t, mine)
		own, _, err := protectMap(t, rec, spec, Defaults())
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := pool(t, []map[string]part{mine, other}, []func(map[string]string) bool{onlyA, never}, everyone)
		if err != nil {
			t.Fatal(err)
		}
		o, p := own["a"], got["a"]
		switch {
		case o.suppressed && !p.suppressed:
			t.Fatalf("seed %d: the node suppresses its own cell (n=%d) but the pool releases %d", seed, len(mine["a"].keys), *p.n)
		case !o.suppressed && (p.suppressed || *p.n != o.n):
			t.Fatalf("seed %d: own release %d, pooled %+v", seed, o.n, p)
		case !o.suppressed:
			shown++
		}
		if o.mean == nil && p.mean != nil {
			t.Fatalf("seed %d: the node withholds its mean but the pool releases %g", seed, *p.mean)
		}
	}
	if shown == 0 {
		t.Fatal("no exclusive cell was ever released: the test proves nothing")
	}
}

func TestANodeWithNoRecordsInACellAddsNothingToIt(t *testing.T) {
	l, err := NewLayout(pooledSpec)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 3))
	rec := nodeAggregate(t, map[string]part{"b": randomPart(r, 12)})
	defer rec.Release()
	vec, _, err := Contribute(rec, l, Defaults(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < l.Cells(); i++ {
		g := l.cells[i][0]
		for s := 0; s < l.Stride(); s++ {
			v := vec[i*l.Stride()+s]
			if (g == "a" || g == "c" || g == Other) && v != 0 {
				t.Fatalf("cell %s slot %d: %d from a node with no records there", g, s, v)
			}
			if (g == "b" || g == Total) && s == 0 && v == 0 {
				t.Fatalf("cell %s: no count from a node with 12 records", g)
			}
		}
	}
}

func TestTheSameRecordsGiveTheSameReleaseWhateverTheCohort(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	a := map[string]part{"a": randomPart(r, 9), "b": randomPart(r, 14)}
	b := map[string]part{"a": randomPart(r, 4), "b": randomPart(r, 8)}
	first, _, err := pool(t, []map[string]part{a, b}, nil, everyone)
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := pool(t, []map[string]part{b, a}, nil, everyone)
	if err != nil {
		t.Fatal(err)
	}
	for g, c := range first {
		d := again[g]
		if (c.n == nil) != (d.n == nil) || c.n != nil && *c.n != *d.n {
			t.Fatalf("cell %s differs between two runs of the same records", g)
		}
	}
}

func TestMissingAndStructuralCellsAreNeverAZeroCount(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	nodes := []map[string]part{{"b": randomPart(r, 30)}, {"b": randomPart(r, 30)}}
	cover := func(c map[string]string) (int, int) {
		switch c["g"] {
		case "a":
			return 1, 0 // only a missing association could fill it
		case "c":
			return 0, 0 // nobody could
		}
		return 3, 2
	}
	got, rep, err := pool(t, nodes, nil, cover)
	if err != nil {
		t.Fatal(err)
	}
	if c := got["a"]; !c.missing || c.n != nil || c.suppressed {
		t.Fatalf("missing cell: %+v", c)
	}
	if c := got["c"]; c.missing || c.n == nil || *c.n != 0 {
		t.Fatalf("structural cell: %+v", c)
	}
	if rep.Missing != 1 || rep.StructuralZeros != 1 {
		t.Fatalf("report %+v", rep)
	}
}

func TestUncancelledMasksReleaseNothing(t *testing.T) {
	l, _ := NewLayout(pooledSpec)
	r := rand.New(rand.NewPCG(6, 6))
	v := make([]uint64, l.Len())
	for i := range v {
		v[i] = r.Uint64()
	}
	if _, _, err := ProtectPooled(memory.DefaultAllocator, l, v, Defaults(), everyone); !errors.Is(err, ErrNoise) {
		t.Fatalf("a masked vector was protected as counts: %v", err)
	}
}

func TestPooledMeansNeedEnoughParticipantsAndNoDominance(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	even := randomPart(r, 30)
	dominated := randomPart(r, 30)
	dominated.vals[0] = 1e6
	got, _, err := pool(t, []map[string]part{{"a": even, "b": dominated}, {"a": randomPart(r, 3)}}, nil, everyone)
	if err != nil {
		t.Fatal(err)
	}
	if got["b"].mean != nil {
		t.Fatalf("a mean dominated by one value was released: %g", *got["b"].mean)
	}
	if got["a"].mean == nil {
		t.Fatal("an even mean over 33 participants was withheld")
	}
}
