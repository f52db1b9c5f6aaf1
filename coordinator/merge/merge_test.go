package merge

import (
	"math/rand/v2"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/samsyn/samsyn/queries/disclosure"
)

var spec = disclosure.Spec{
	Dimensions: []disclosure.Dimension{{Name: "g", Domain: []string{"a", "b", "c", "d"}}},
	Measures:   []disclosure.Measure{{Name: "m", Agg: "mean"}},
	Totals:     true,
}

// nodeTable builds one node's protected table the way Protect would, with n true
// participants per cell and the node owning only the cells in own.
func nodeTable(t *testing.T, r *rand.Rand, counts map[string]int, own map[string]bool) arrow.Record {
	t.Helper()
	fields := []arrow.Field{
		{Name: "g", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: disclosure.ColN, Type: arrow.PrimitiveTypes.Int64},
		{Name: disclosure.ColCellKey, Type: arrow.PrimitiveTypes.Int64},
		{Name: "m" + disclosure.SuffixSum, Type: arrow.PrimitiveTypes.Float64},
		{Name: "m" + disclosure.SuffixAbs, Type: arrow.PrimitiveTypes.Float64},
		{Name: "m" + disclosure.SuffixCount, Type: arrow.PrimitiveTypes.Int64},
		{Name: "m" + disclosure.SuffixTop1, Type: arrow.PrimitiveTypes.Float64},
		{Name: "m" + disclosure.SuffixTop2, Type: arrow.PrimitiveTypes.Float64},
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, arrow.NewSchema(fields, nil))
	defer b.Release()
	total := 0
	add := func(g string, n int) {
		if g == disclosure.Total {
			b.Field(0).AppendNull()
		} else {
			b.Field(0).(*array.StringBuilder).Append(g)
		}
		b.Field(1).(*array.Int64Builder).Append(int64(n))
		b.Field(2).(*array.Int64Builder).Append(int64(r.Uint32()))
		b.Field(3).(*array.Float64Builder).Append(float64(6 * n))
		b.Field(4).(*array.Float64Builder).Append(float64(6 * n))
		b.Field(5).(*array.Int64Builder).Append(int64(n))
		b.Field(6).(*array.Float64Builder).Append(6)
		b.Field(7).(*array.Float64Builder).Append(6)
	}
	for g, n := range counts {
		add(g, n)
		total += n
	}
	add(disclosure.Total, total)
	agg := b.NewRecord()
	defer agg.Release()
	s := spec
	s.Structural = func(c map[string]string) bool { return c["g"] != disclosure.Total && !own[c["g"]] }
	pol := disclosure.Defaults()
	out, _, err := disclosure.Protect(memory.DefaultAllocator, agg, s, pol)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type cell struct {
	n          int64
	suppressed bool
	mean       float64
	hasMean    bool
}

func cells(rec arrow.Record) map[string]cell {
	out := map[string]cell{}
	g := rec.Column(0).(*array.String)
	n := rec.Column(1).(*array.Int64)
	s := rec.Column(2).(*array.Boolean)
	m := rec.Column(3).(*array.Float64)
	for i := 0; i < int(rec.NumRows()); i++ {
		out[g.Value(i)] = cell{n: n.Value(i), suppressed: s.Value(i), mean: m.Value(i), hasMean: !m.IsNull(i)}
	}
	return out
}

func TestMergedCountsAreSumsOfReleasedNodeCells(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for trial := 0; trial < 200; trial++ {
		var inputs []Input
		var nodeCells []map[string]cell
		own := []map[string]bool{{"a": true, "b": true}, {"b": true, "c": true}, {"c": true}}
		for i, o := range own {
			counts := map[string]int{}
			for g := range o {
				counts[g] = 12 + r.IntN(40)
			}
			if trial%3 == 0 && i == 1 {
				counts["b"] = 1 + r.IntN(3) // a small cell at one node
			}
			tab := nodeTable(t, r, counts, o)
			defer tab.Release()
			inputs = append(inputs, Input{Association: string(rune('x' + i)), Table: tab})
			nodeCells = append(nodeCells, cells(tab))
		}
		out, rep, err := Merge(memory.DefaultAllocator, spec, inputs, disclosure.Defaults(), nil)
		if err != nil {
			t.Fatal(err)
		}
		merged := cells(out)
		out.Release()
		for g, c := range merged {
			var sum int64
			anySuppressed, allZero := false, true
			for _, nc := range nodeCells {
				x := nc[g]
				anySuppressed = anySuppressed || x.suppressed
				allZero = allZero && !x.suppressed && x.n == 0
				sum += x.n
			}
			switch {
			case allZero:
				if c.suppressed || c.n != 0 {
					t.Fatalf("cell %s: structural zero merged as %+v", g, c)
				}
			case anySuppressed:
				if !c.suppressed {
					t.Fatalf("cell %s: released %d although a node suppressed it", g, c.n)
				}
			default:
				if c.suppressed || c.n != sum {
					t.Fatalf("cell %s: merged %+v, nodes sum to %d", g, c, sum)
				}
				if !c.hasMean || c.mean != 6 {
					t.Fatalf("cell %s: mean %+v", g, c)
				}
			}
			if !c.suppressed && c.n > 0 && c.n < 5 {
				t.Fatalf("cell %s: merged small cell %d", g, c.n)
			}
		}
		if merged["d"].n != 0 || merged["d"].suppressed || rep.StructuralZeros != 1 {
			t.Fatalf("d is outside every node: %+v, report %+v", merged["d"], rep)
		}
	}
}

// TestACellOnlyAMissingAssociationCouldFillIsMissingNotZero: one association answered; a cell
// only another association could fill is marked missing with no count, never a structural 0,
// and a cell nobody could fill stays 0.
func TestACellOnlyAMissingAssociationCouldFillIsMissingNotZero(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	tab := nodeTable(t, r, map[string]int{"a": 20}, map[string]bool{"a": true})
	defer tab.Release()
	cover := func(c map[string]string) (int, int) {
		switch c["g"] {
		case "a":
			return 1, 1
		case "b", "c":
			return 1, 0 // only the association that did not answer
		case "d":
			return 0, 0
		}
		return 3, 1
	}
	out, _, err := Merge(memory.DefaultAllocator, spec, []Input{{Association: "x", Table: tab}}, disclosure.Defaults(), cover)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	missing := out.Column(out.Schema().FieldIndices(disclosure.ColMissing)[0]).(*array.Boolean)
	n := out.Column(1).(*array.Int64)
	for i := 0; i < int(out.NumRows()); i++ {
		g := out.Column(0).(*array.String).Value(i)
		switch g {
		case "b", "c":
			if !missing.Value(i) || !n.IsNull(i) {
				t.Fatalf("cell %s of a missing association: missing=%v n=%v", g, missing.Value(i), n.Value(i))
			}
		case "d":
			if missing.Value(i) || n.IsNull(i) || n.Value(i) != 0 {
				t.Fatalf("cell d nobody could fill: %v", n.Value(i))
			}
		default:
			if missing.Value(i) {
				t.Fatalf("cell %s marked missing", g)
			}
		}
	}
}
