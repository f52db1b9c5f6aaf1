package merge

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/wire"
)

// Input is one node's protected table.
type Input struct {
	Association string
	Table       arrow.Record
}

// Report summarises a merge.
type Report struct {
	Cells           int      `json:"cells"`
	Suppressed      int      `json:"suppressed"`
	StructuralZeros int      `json:"structural_zeros"`
	Associations    []string `json:"associations"`
}

type acc struct {
	dims       []string
	n          int64
	suppressed bool
	structural bool // every node released a structural zero
	seen       int
	wsum       []float64 // per measure: Σ value·n (mean) or Σ value (sum)
	missing    []bool    // per measure: some contributing node withheld it
	order      int
}

// Merge sums the nodes' protected cells. spec gives the dimensions and measures, in the
// column order the nodes released them (as Protect writes them).
//
// With cover, the table also says per cell whether only associations missing from the
// result could fill it (disclosure.ColMissing: unknown, never 0) and how many of those that
// could are in it (disclosure.ColAssociations), as a pooled release does.
func Merge(mem memory.Allocator, spec disclosure.Spec, inputs []Input, pol disclosure.Policy, cover disclosure.Coverage) (arrow.Record, Report, error) {
	rep := Report{}
	nd, nm := len(spec.Dimensions), len(spec.Measures)
	cells := map[string]*acc{}
	for _, in := range inputs {
		rep.Associations = append(rep.Associations, in.Association)
		dims := make([]string, nd)
		for i, d := range spec.Dimensions {
			dims[i] = d.Name
		}
		ms := make([]string, nm)
		for j, m := range spec.Measures {
			ms[j] = m.Name
		}
		t, err := wire.ReadTable(in.Table, dims, ms)
		if err != nil {
			return nil, rep, fmt.Errorf("merge: %s: %w", in.Association, err)
		}
		for r := 0; r < t.Len(); r++ {
			c := t.Cell(r)
			k := strings.Join(c.Dims, "\x00")
			a := cells[k]
			if a == nil {
				a = &acc{dims: c.Dims, structural: true, wsum: make([]float64, nm), missing: make([]bool, nm), order: len(cells)}
				cells[k] = a
			}
			a.seen++
			if c.Suppressed || c.N == nil {
				a.suppressed, a.structural = true, false
				continue
			}
			n := *c.N
			if n == 0 {
				continue // a structural zero adds nothing and withholds nothing
			}
			a.structural = false
			a.n += n
			for j, m := range spec.Measures {
				if c.Measures[j] == nil {
					a.missing[j] = true
					continue
				}
				v := *c.Measures[j]
				if m.Agg == "mean" {
					v *= float64(n)
				}
				a.wsum[j] += v
			}
		}
	}
	ordered := make([]*acc, 0, len(cells))
	for _, a := range cells {
		ordered = append(ordered, a)
	}
	sort.Slice(ordered, func(i, j int) bool { return ordered[i].order < ordered[j].order })

	fields := disclosure.ReleaseFields(spec, cover != nil)
	md := arrow.NewMetadata([]string{"samsyn.disclosure", "samsyn.associations"}, []string{pol.Params(), strings.Join(rep.Associations, ",")})
	b := array.NewRecordBuilder(mem, arrow.NewSchema(fields, &md))
	defer b.Release()
	for _, a := range ordered {
		rep.Cells++
		for i := range spec.Dimensions {
			b.Field(i).(*array.StringBuilder).Append(a.dims[i])
		}
		nb := b.Field(nd).(*array.Int64Builder)
		sb := b.Field(nd + 1).(*array.BooleanBuilder)
		withheld := a.suppressed || a.seen < len(inputs) && !a.structural
		could, present := 1, 1
		if cover != nil {
			cell := make(map[string]string, nd)
			for i, d := range spec.Dimensions {
				cell[d.Name] = a.dims[i]
			}
			could, present = cover(cell)
			b.Field(nd + 2 + nm).(*array.BooleanBuilder).Append(could > 0 && present == 0)
			b.Field(nd + 3 + nm).(*array.Int64Builder).Append(int64(present))
		}
		switch {
		case could == 0:
			rep.StructuralZeros++
			nb.Append(0)
			sb.Append(false)
			appendNulls(b, nd+2, nm)
			continue
		case present == 0:
			nb.AppendNull()
			sb.Append(false)
			appendNulls(b, nd+2, nm)
			continue
		case a.structural && a.seen == len(inputs):
			rep.StructuralZeros++
			nb.Append(0)
			sb.Append(false)
			appendNulls(b, nd+2, nm)
			continue
		case withheld || a.n < int64(pol.Threshold):
			rep.Suppressed++
			nb.AppendNull()
			sb.Append(true)
			appendNulls(b, nd+2, nm)
			continue
		}
		nb.Append(a.n)
		sb.Append(false)
		for j, m := range spec.Measures {
			mb := b.Field(nd + 2 + j).(*array.Float64Builder)
			if a.missing[j] {
				mb.AppendNull()
				continue
			}
			v := a.wsum[j]
			if m.Agg == "mean" {
				v /= float64(a.n)
			}
			mb.Append(math.Round(v*10) / 10)
		}
	}
	return b.NewRecord(), rep, nil
}

func appendNulls(b *array.RecordBuilder, from, n int) {
	for j := 0; j < n; j++ {
		b.Field(from + j).(*array.Float64Builder).AppendNull()
	}
}
