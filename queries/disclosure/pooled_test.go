package disclosure

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
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
		smallNonEmpty := 0
		for _, g := range []string{"a", "b", "c"} {
			if want[g] > 0 && want[g] < 5 {
				smallNonEmpty++
			}
		}
		for _, g := range []string{"a", "b", "c", Total} {
			c := got[g]
			switch {
			case want[g] < 5 && (!c.suppressed || c.n != nil):
				t.Fatalf("seed %d cell %s: want suppressed (pooled %d), got %+v", seed, g, want[g], c)
			case want[g] >= 5 && c.suppressed && smallNonEmpty == 1 && g != Total:
				// secondary suppression: the margin would give the one small cell away
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

// TestNoMarginGivesASmallSuppressedCellAway: over many random two-dimensional pooled tables,
// after protection no line (cells differing in one dimension, with its released margin) has
// exactly one suppressed non-empty cell: subtraction never isolates one.
func TestNoMarginGivesASmallSuppressedCellAway(t *testing.T) {
	spec := Spec{Dimensions: []Dimension{{Name: "x", Domain: []string{"a", "b", "c", "d"}}, {Name: "y", Domain: []string{"p", "q", "r"}}}, Totals: true}
	l, err := NewLayout(spec)
	if err != nil {
		t.Fatal(err)
	}
	secondaries := 0
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 9))
		vec := make([]uint64, l.Len())
		val := map[string]int64{}
		for i, c := range l.cells {
			if c[0] == Total || c[1] == Total || c[0] == Other || c[1] == Other {
				continue
			}
			v := int64(r.IntN(12))
			if r.IntN(3) == 0 {
				v = int64(r.IntN(5))
			}
			vec[i*l.Stride()] = uint64(v)
			val[c[0]+"|"+c[1]] = v
		}
		// margins as sums of the inner cells
		for i, c := range l.cells {
			if c[0] == Other || c[1] == Other || c[0] != Total && c[1] != Total {
				continue
			}
			var sum int64
			for k, v := range val {
				var x, y string
				fmt.Sscanf(strings.Replace(k, "|", " ", 1), "%s %s", &x, &y)
				if (c[0] == Total || c[0] == x) && (c[1] == Total || c[1] == y) {
					sum += v
				}
			}
			vec[i*l.Stride()] = uint64(sum)
		}
		present := 1 + int(seed%2) // one association alone, or two pooled
		out, rep, err := ProtectPooled(memory.DefaultAllocator, l, vec, Defaults(), func(map[string]string) (int, int) { return present, present })
		if errors.Is(err, ErrTooSparse) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		secondaries += rep.SecondarySuppressed
		sup := map[string]bool{}
		n := map[string]int64{}
		for i := 0; i < int(out.NumRows()); i++ {
			k := out.Column(0).(*array.String).Value(i) + "|" + out.Column(1).(*array.String).Value(i)
			sup[k] = out.Column(3).(*array.Boolean).Value(i)
			if c := out.Column(2).(*array.Int64); !c.IsNull(i) {
				n[k] = c.Value(i)
			}
		}
		out.Release()
		for dim := 0; dim < 2; dim++ {
			for _, fixed := range append([]string{Total}, spec.Dimensions[1-dim].Domain...) {
				var line []string
				for _, v := range spec.Dimensions[dim].Domain {
					if dim == 0 {
						line = append(line, v+"|"+fixed)
					} else {
						line = append(line, fixed+"|"+v)
					}
				}
				margin := Total + "|" + fixed
				if dim == 1 {
					margin = fixed + "|" + Total
				}
				if sup[margin] {
					continue
				}
				small := 0
				noise := 0.0 // variance of margin minus the released cells: one unit per contributor
				for _, k := range append(line, margin) {
					if sup[k] && (vecAt(l, vec, k) > 0 && vecAt(l, vec, k) < 5 || vecAt(l, vec, k) >= 5) {
						small++
					}
					if !sup[k] {
						noise += float64(max(1, min(int64(present), n[k])))
					}
				}
				if small == 1 && math.Sqrt(noise) < 2.5 {
					t.Fatalf("seed %d: the released margin %s isolates one suppressed cell of %v", seed, margin, line)
				}
			}
		}
	}
	if secondaries == 0 {
		t.Fatal("no secondary suppression happened: the test proves nothing")
	}
}

func vecAt(l *Layout, vec []uint64, key string) int64 {
	return int64(vec[l.index[strings.Replace(key, "|", "\x00", 1)]*l.Stride()])
}
