package disclosure

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/samsyn/samsyn/queries/secagg"
)

// Columns a pooled release adds after the measures.
const (
	// ColMissing is true on a cell that only associations missing from the result could
	// fill: it is unknown, never zero.
	ColMissing = "missing"
	// ColAssociations is how many of the associations that could fill the cell are in the
	// result (on a margin of a partial result, fewer than could).
	ColAssociations = "associations"
)

// Layout is the fixed frame of a pooled table: every combination of the dimension domains,
// each with Other (and Total for margins), in one order that every node and the coordinator
// derive from the catalog entry alone. A contribution is a vector of Layout.Len() integers:
// per cell, Stride() slots.
//
// Slot 0 of a cell is its perturbed count; slot 1 its veto (1 from a node that alone can fill
// the cell and holds fewer than the threshold there, so the pooled cell is suppressed as the
// node's own release would be); measure j adds four slots from 2+4j: its perturbed
// contributor count, and in fixed point its sum, its sum of absolute values and its sum of
// squares.
type Layout struct {
	spec  Spec
	cells [][]string
	index map[string]int
}

// NewLayout enumerates the frame of spec. Every dimension must have a domain.
func NewLayout(spec Spec) (*Layout, error) {
	domains := make([][]string, len(spec.Dimensions))
	size := 1
	for i, d := range spec.Dimensions {
		if len(d.Domain) == 0 {
			return nil, fmt.Errorf("layout: dimension %s has no code list domain", d.Name)
		}
		dom := append(append([]string{}, d.Domain...), Other)
		if spec.Totals {
			dom = append(dom, Total)
		}
		domains[i] = dom
		size *= len(dom)
		if size > MaxCells {
			return nil, fmt.Errorf("layout: the frame has more than %d cells", MaxCells)
		}
	}
	l := &Layout{spec: spec, index: make(map[string]int, size)}
	forEachCombination(domains, func(dims []string) {
		l.index[strings.Join(dims, "\x00")] = len(l.cells)
		l.cells = append(l.cells, dims)
	})
	return l, nil
}

// Count reads, from a contribution or a pooled vector, the count and veto of the cell with
// these dimension values.
func (l *Layout) Count(vec []uint64, dims []string) (n int64, veto bool, ok bool) {
	i, found := l.index[strings.Join(dims, "\x00")]
	if !found || len(vec) != l.Len() {
		return 0, false, false
	}
	return int64(vec[i*l.Stride()]), vec[i*l.Stride()+1] > 0, true
}

// Stride is the number of slots per cell.
func (l *Layout) Stride() int { return 2 + 4*len(l.spec.Measures) }

// Cells is the number of cells in the frame.
func (l *Layout) Cells() int { return len(l.cells) }

// Len is the length of a contribution vector.
func (l *Layout) Len() int { return len(l.cells) * l.Stride() }

// Hash identifies the layout, so a node and the coordinator can tell that they agree on it.
func (l *Layout) Hash() string {
	h := sha256.New()
	for _, d := range l.spec.Dimensions {
		fmt.Fprintf(h, "d %s %q\n", d.Name, d.Domain)
	}
	for _, m := range l.spec.Measures {
		fmt.Fprintf(h, "m %s %s\n", m.Name, m.Agg)
	}
	fmt.Fprintf(h, "totals %v stride %d cells %d\n", l.spec.Totals, l.Stride(), len(l.cells))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func (l *Layout) cellMap(i int) map[string]string {
	m := make(map[string]string, len(l.spec.Dimensions))
	for k, d := range l.spec.Dimensions {
		m[d.Name] = l.cells[i][k]
	}
	return m
}

// Contribute turns a node's aggregate into its unmasked contribution to a pooled table:
// every count perturbed with the cell key method from the node's own record keys (the same
// records get the same noise in every query and cohort), no suppression, measure sums in
// fixed point. A cell that exclusive reports (one only this node can fill: its own
// municipalities, its own row) is protected as in the node's own release: where that release
// would suppress its count the node sets the cell's veto, and where it would withhold a
// measure the node contributes none of it, so pooling never shows of such a cell more than
// the node alone would. An empty cell contributes zero in every slot: no fixed offset.
func Contribute(in arrow.Record, l *Layout, pol Policy, exclusive func(cell map[string]string) bool) ([]uint64, Report, error) {
	var rep Report
	pt := pol.PTable()
	if pt == nil {
		return nil, rep, errors.New("contribute: the policy has no perturbation table")
	}
	if err := pol.Check(); err != nil {
		return nil, rep, err
	}
	cells, err := readCells(in, l.spec)
	if err != nil {
		return nil, rep, err
	}
	vec := make([]uint64, l.Len())
	stride := l.Stride()
	rep.Cells = l.Cells()
	for _, c := range cells {
		i, ok := l.index[strings.Join(c.dims, "\x00")]
		if !ok {
			return nil, rep, fmt.Errorf("contribute: a cell outside the frame (%d dimensions): refusing to contribute it", len(c.dims))
		}
		if c.n <= 0 {
			continue
		}
		rep.NonEmpty++
		released := pt.Perturb(c.n, c.key)
		excl := exclusive != nil && exclusive(l.cellMap(i))
		base := i * stride
		vec[base] = uint64(released)
		if excl && (released < int64(pol.Threshold) || c.n < int64(pol.Threshold)) {
			rep.Suppressed++
			rep.SuppressedNonEmpty++
			vec[base+1] = 1
			continue
		}
		for j, m := range l.spec.Measures {
			mi := c.measures[j]
			if math.IsNaN(mi.sq) {
				return nil, rep, fmt.Errorf("contribute: measure %s has no sum of squares", m.Name)
			}
			if mi.count == 0 {
				continue
			}
			if excl {
				if _, ok := measureValue(mi, m, released, pol); !ok {
					rep.MeasuresSuppressed++
					continue
				}
			}
			s := base + 2 + 4*j
			vec[s] = uint64(pt.Perturb(mi.count, c.key))
			vec[s+1], vec[s+2], vec[s+3] = secagg.Fixed(mi.sum), secagg.Fixed(mi.abs), secagg.Fixed(mi.sq)
		}
	}
	return vec, rep, nil
}

// Coverage says, for a cell of a pooled table, how many associations of the federation could
// fill it (zero for a structurally impossible combination) and how many of those are in the
// result.
type Coverage func(cell map[string]string) (could, present int)

// ErrNoise is returned when a pooled vector holds values no sum of contributions can: the
// masks did not cancel (a node was left out, or used another round), and nothing is released.
var ErrNoise = errors.New("pooled cells are not counts: the masks did not cancel")

// maxPooledCount bounds a plausible pooled count; a masked value is almost surely above it.
const maxPooledCount = 1 << 40

// Kinds of a pooled cell's outcome.
const (
	kindReleased = iota
	kindSuppressed
	kindSecondary // released by the threshold, suppressed to protect a suppressed neighbour
	kindStructural
	kindMissing
	kindDropped // a cell of Other below the threshold: not in the output
)

type decision struct {
	kind          int
	n             int64
	present       int
	measures      []*float64
	smallNonEmpty bool // suppressed with a pooled count of 1 to threshold−1
}

// ProtectPooled applies disclosure control once, to the pooled perturbed cells of a cohort:
// a count below the threshold is suppressed (empty cells too); a structurally impossible
// cell is 0 only when nobody could fill it; a cell only missing associations could fill is
// marked missing, never 0; means need MeanMinN and pass a dominance check bounded from the
// sum of squares (the two largest of n values are at most √(2·Σx²)); where a margin would
// let a suppressed non-empty cell be computed from its released neighbours, the smallest
// neighbour is suppressed too (secondary suppression); and the table is refused whole when
// most of its non-empty cells would be suppressed by the threshold. Cells of Other are
// released only where their count is. The output has the dimension columns, n, suppressed,
// the measures, then ColMissing and ColAssociations.
func ProtectPooled(mem memory.Allocator, l *Layout, pooled []uint64, pol Policy, cover Coverage) (arrow.Record, Report, error) {
	var rep Report
	if len(pooled) != l.Len() {
		return nil, rep, fmt.Errorf("protect pooled: %d values, the layout has %d", len(pooled), l.Len())
	}
	if err := pol.Check(); err != nil {
		return nil, rep, err
	}
	spec := l.spec
	nd, nm := len(spec.Dimensions), len(spec.Measures)
	stride := l.Stride()
	for i := range l.cells {
		for s := 0; s < stride; s++ {
			v := pooled[i*stride+s]
			if (s < 2 || (s-2)%4 == 0) && v > maxPooledCount {
				return nil, rep, ErrNoise
			}
		}
	}
	ds := make([]decision, len(l.cells))
	for i, dims := range l.cells {
		base := i * stride
		d := &ds[i]
		d.n = int64(pooled[base])
		veto := pooled[base+1] > 0
		isOther := false
		for _, v := range dims {
			isOther = isOther || v == Other
		}
		could, present := cover(l.cellMap(i))
		d.present = present
		switch {
		case could == 0:
			d.kind = kindStructural
			continue
		case present == 0:
			d.kind = kindMissing
			continue
		}
		if d.n > 0 {
			rep.NonEmpty++
		}
		if d.n < int64(pol.Threshold) || veto {
			d.kind, d.smallNonEmpty = kindSuppressed, d.n > 0 || veto
			if isOther {
				d.kind = kindDropped
			}
			rep.Suppressed++
			if d.n > 0 {
				rep.SuppressedNonEmpty++
			}
			continue
		}
		d.measures = make([]*float64, nm)
		for j, m := range spec.Measures {
			s := base + 2 + 4*j
			count := int64(pooled[s])
			sum, abs, sq := secagg.Float(pooled[s+1]), secagg.Float(pooled[s+2]), secagg.Float(pooled[s+3])
			if count < int64(pol.MeanMinN) || d.n < int64(pol.MeanMinN) || (abs > 0 && math.Sqrt(2*math.Max(sq, 0)) > pol.DominanceShare*abs) {
				rep.MeasuresSuppressed++
				continue
			}
			v := sum
			if m.Agg == "mean" {
				v = sum / float64(count)
			}
			v = math.Round(v*10) / 10
			d.measures[j] = &v
		}
	}
	if rep.NonEmpty > 0 && float64(rep.SuppressedNonEmpty) > pol.MaxSuppressedShare*float64(rep.NonEmpty) {
		return nil, rep, fmt.Errorf("%w: %d of %d (more than %.0f %%)", ErrTooSparse, rep.SuppressedNonEmpty, rep.NonEmpty, 100*pol.MaxSuppressedShare)
	}
	if spec.Totals {
		rep.SecondarySuppressed = l.complement(ds, pol)
		rep.Suppressed += rep.SecondarySuppressed
	}

	fields := ReleaseFields(spec, true)
	md := arrow.NewMetadata([]string{"samsyn.disclosure"}, []string{pol.PooledParams()})
	b := array.NewRecordBuilder(mem, arrow.NewSchema(fields, &md))
	defer b.Release()
	nb := b.Field(nd).(*array.Int64Builder)
	sb := b.Field(nd + 1).(*array.BooleanBuilder)
	mb := b.Field(nd + 2 + nm).(*array.BooleanBuilder)
	ab := b.Field(nd + 3 + nm).(*array.Int64Builder)
	for i, dims := range l.cells {
		d := ds[i]
		if d.kind == kindDropped {
			continue
		}
		rep.Cells++
		for k := range dims {
			b.Field(k).(*array.StringBuilder).Append(dims[k])
		}
		ab.Append(int64(d.present))
		mb.Append(d.kind == kindMissing)
		switch d.kind {
		case kindStructural:
			rep.StructuralZeros++
			nb.Append(0)
		case kindReleased:
			nb.Append(d.n)
		default:
			nb.AppendNull()
		}
		if d.kind == kindMissing {
			rep.Missing++
		}
		sb.Append(d.kind == kindSuppressed || d.kind == kindSecondary)
		for j := 0; j < nm; j++ {
			fb := b.Field(nd + 2 + j).(*array.Float64Builder)
			if d.kind == kindReleased && d.measures[j] != nil {
				fb.Append(*d.measures[j])
			} else {
				fb.AppendNull()
			}
		}
	}
	return b.NewRecord(), rep, nil
}

// maxComplementRounds bounds the passes of secondary suppression (each pass only adds).
const maxComplementRounds = 32

// complement applies secondary suppression: in every line of the table (the cells that
// differ in one dimension only, with that dimension's margin), a margin that is released
// while exactly one cell of the line is suppressed would give that cell away by subtraction,
// unless the pooled noise of the line already hides it (see noisy), so the smallest released cell of the line is suppressed too. A secondary
// suppression is itself an unknown in its other lines, so passes repeat until none adds
// anything. A suppressed cell counts as unknown when it is non-empty as far as the pool can
// tell (a pooled count above 0, or a node's veto); of one whose pooled count is 0, what
// subtraction tells is "about none", under the noise of every cell in the line. It returns
// the number of cells it suppressed.
func (l *Layout) complement(ds []decision, pol Policy) int {
	nd := len(l.spec.Dimensions)
	v := 1.0
	if pt := pol.PTable(); pt != nil {
		v = pt.V
	}
	// noisy reports whether subtraction in a line is already too noisy to tell a small count
	// from none: the margin and every released cell carry the noise of each association that
	// contributes to it (at most those present that could fill it, and no more than its
	// count), so the difference has variance v·Σk; a standard deviation of half the threshold
	// or more spreads a count of 1 to threshold−1 over the whole small range.
	noisy := func(idx []int) bool {
		var k float64
		for _, i := range idx {
			if ds[i].kind == kindReleased {
				k += float64(max(1, min(int64(ds[i].present), ds[i].n)))
			}
		}
		return math.Sqrt(v*k) >= float64(pol.Threshold)/2
	}
	unknown := func(d decision) bool {
		return d.kind == kindSecondary || (d.kind == kindSuppressed || d.kind == kindDropped) && d.smallNonEmpty
	}
	added := 0
	for range maxComplementRounds {
		changed := false
		for dim := 0; dim < nd; dim++ {
			lines := map[string][]int{}
			for i, dims := range l.cells {
				k := make([]string, nd)
				copy(k, dims)
				k[dim] = "\x01"
				key := strings.Join(k, "\x00")
				lines[key] = append(lines[key], i)
			}
			for _, idx := range lines {
				margin, unknowns, best := -1, 0, -1
				for _, i := range idx {
					if l.cells[i][dim] == Total {
						margin = i
						continue
					}
					if unknown(ds[i]) {
						unknowns++
					}
					if ds[i].kind == kindReleased && (best < 0 || ds[i].n < ds[best].n) {
						best = i
					}
				}
				if margin < 0 || ds[margin].kind != kindReleased || unknowns != 1 || noisy(idx) {
					continue
				}
				if best < 0 {
					best = margin
				}
				ds[best].kind = kindSecondary
				added++
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	return added
}
