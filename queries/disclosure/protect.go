package disclosure

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// Total is the dimension value of a margin: the cell over all values of that dimension.
const Total = "_total"

// Other is the dimension value of every row whose value is outside the dimension's code
// list (or missing). A node's aggregate maps such values to it, so no free text, date or
// identifier can ever become a released label.
const Other = "_other"

// Column names of the aggregate a node computes and Protect consumes. A measure m adds
// m+SuffixSum, m+SuffixCount (contributors), m+SuffixAbs (sum of |contribution|) and
// m+SuffixTop1, m+SuffixTop2 (the two largest |contributions|).
const (
	ColN          = "n"
	ColCellKey    = "cell_key"
	ColSuppressed = "suppressed"
	SuffixSum     = "__sum"
	SuffixCount   = "__count"
	SuffixAbs     = "__abs"
	SuffixTop1    = "__top1"
	SuffixTop2    = "__top2"
	SuffixSq      = "__sq" // sum of squared contributions: bounds the two largest in a pooled cell
)

// MaxCells bounds the frame of a protected table.
const MaxCells = 200_000

// RecordKey derives a participant's record key from the node secret: uniform on 0..2^32-1,
// stable for as long as the secret and the participant key are, and useless without the secret.
//
// It is the low 32 bits of MD5(k ‖ participant key), read little-endian, where k is
// RecordKeySQLKey(secret): exactly what DuckDB's built-in md5_number computes inside the node's
// statement, natively and in parallel, so no Go function is called per row and none sits in
// the store's catalog for an analyst to call. Why MD5 is sound here: k fills the first 64-byte
// block, so the first compression yields a secret chaining value, and participant keys all have
// one length (a prefix-free set), which makes the construction the keyed cascade — a
// pseudorandom function as long as MD5's compression function is one with a secret chaining
// value. MD5's known breaks are collisions under a public starting value, which an attacker
// would have to both choose inputs for and see outputs of; here they can do neither.
func RecordKey(secret []byte, participantKey string) uint32 {
	return recordKey(RecordKeySQLKey(secret), participantKey)
}

// RecordKeySQLKey is the record-key key the node's statements bind as a parameter: 64
// hexadecimal characters (one MD5 block, 256 bits of HMAC-SHA-256 output) derived from the
// node secret. It is held in the node's memory only, never written into SQL text or a log.
func RecordKeySQLKey(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("samsyn/record-key/v2"))
	return hex.EncodeToString(m.Sum(nil))
}

func recordKey(k, participantKey string) uint32 {
	h := md5.New()
	io.WriteString(h, k)
	io.WriteString(h, participantKey)
	var buf [md5.Size]byte
	return binary.LittleEndian.Uint32(h.Sum(buf[:0]))
}

// CellKey combines record keys: their sum modulo 2^32.
func CellKey(recordKeys ...uint32) uint32 {
	var s uint32
	for _, k := range recordKeys {
		s += k // wraps modulo 2^32
	}
	return s
}

// Dimension is one dimension of a table with its full domain, in display order. An empty
// domain means only the values observed are released.
type Dimension struct {
	Name   string
	Domain []string
}

// Measure is a numeric measure released per cell.
type Measure struct {
	Name string
	Agg  string // "mean" or "sum"
}

// Spec is the shape of a protected table.
type Spec struct {
	Dimensions []Dimension
	Measures   []Measure
	Totals     bool
	// Structural reports combinations that cannot exist (e.g. a municipality outside the
	// node's association). Such a cell, if empty, is released as 0 rather than suppressed.
	Structural func(cell map[string]string) bool
}

// Report summarises what Protect did.
type Report struct {
	Cells              int `json:"cells"`
	NonEmpty           int `json:"non_empty"`
	Suppressed         int `json:"suppressed"`
	SuppressedNonEmpty int `json:"suppressed_non_empty"`
	StructuralZeros    int `json:"structural_zeros"`
	MeasuresSuppressed int `json:"measures_suppressed"`
	Missing            int `json:"missing,omitempty"` // pooled cells only missing associations could fill
	// SecondarySuppressed counts cells suppressed only to protect a suppressed neighbour
	// (included in Suppressed).
	SecondarySuppressed int `json:"secondary_suppressed,omitempty"`
}

// ErrTooSparse refuses a table in which too many non-empty cells would be suppressed.
var ErrTooSparse = errors.New("table refused: too many of its non-empty cells would be suppressed")

// cell is one cell of the frame.
type cell struct {
	dims     []string
	n        int64
	key      uint32
	measures []measureIn
}

type measureIn struct {
	sum, abs, top1, top2 float64
	sq                   float64 // NaN when the aggregate has no sum of squares
	count                int64
}

// Protect turns a node's aggregate into a releasable table: it fills the frame (every
// combination of the dimension domains, with margins if spec.Totals), perturbs every count
// with the cell key method, suppresses cells whose perturbed or true count is below the
// threshold and empty cells (unless
// structurally impossible), releases measures only where they pass the mean and dominance
// rules, and refuses the table whole if it is too sparse. The output has the dimension
// columns, n (nullable), suppressed, and one nullable float64 per measure.
func Protect(mem memory.Allocator, in arrow.Record, spec Spec, pol Policy) (arrow.Record, Report, error) {
	var rep Report
	pt := pol.PTable()
	if pt == nil {
		return nil, rep, errors.New("protect: the policy has no perturbation table")
	}
	if err := pol.Check(); err != nil {
		return nil, rep, err
	}
	cells, err := readCells(in, spec)
	if err != nil {
		return nil, rep, err
	}
	frame, err := buildFrame(spec, cells)
	if err != nil {
		return nil, rep, err
	}

	fields := ReleaseFields(spec, false)
	md := arrow.NewMetadata([]string{"samsyn.disclosure"}, []string{pol.Params()})
	b := array.NewRecordBuilder(mem, arrow.NewSchema(fields, &md))
	defer b.Release()

	dimMap := make(map[string]string, len(spec.Dimensions))
	for _, c := range frame {
		rep.Cells++
		for i, d := range spec.Dimensions {
			b.Field(i).(*array.StringBuilder).Append(c.dims[i])
			dimMap[d.Name] = c.dims[i]
		}
		nb := b.Field(len(spec.Dimensions)).(*array.Int64Builder)
		sb := b.Field(len(spec.Dimensions) + 1).(*array.BooleanBuilder)
		if c.n > 0 {
			rep.NonEmpty++
		}
		released := pt.Perturb(c.n, c.key)
		switch {
		case c.n == 0 && spec.Structural != nil && spec.Structural(dimMap):
			rep.StructuralZeros++
			nb.Append(0)
			sb.Append(false)
			for j := range spec.Measures {
				b.Field(len(spec.Dimensions) + 2 + j).(*array.Float64Builder).AppendNull()
			}
			continue
		case released < int64(pol.Threshold) || c.n < int64(pol.Threshold):
			// Suppressed when either the released or the true count is small: the cell key
			// method alone would release a true 3 as 5 now and then, and no cell of fewer
			// than Threshold participants leaves a node.
			rep.Suppressed++
			if c.n > 0 {
				rep.SuppressedNonEmpty++
			}
			nb.AppendNull()
			sb.Append(true)
			for j := range spec.Measures {
				b.Field(len(spec.Dimensions) + 2 + j).(*array.Float64Builder).AppendNull()
			}
			continue
		}
		nb.Append(released)
		sb.Append(false)
		for j, m := range spec.Measures {
			mb := b.Field(len(spec.Dimensions) + 2 + j).(*array.Float64Builder)
			v, ok := measureValue(c.measures[j], m, released, pol)
			if !ok {
				rep.MeasuresSuppressed++
				mb.AppendNull()
				continue
			}
			mb.Append(v)
		}
	}
	if rep.NonEmpty > 0 && float64(rep.SuppressedNonEmpty) > pol.MaxSuppressedShare*float64(rep.NonEmpty) {
		return nil, rep, fmt.Errorf("%w: %d of %d (more than %.0f %%)", ErrTooSparse, rep.SuppressedNonEmpty, rep.NonEmpty, 100*pol.MaxSuppressedShare)
	}
	return b.NewRecord(), rep, nil
}

// measureValue applies the mean and dominance rules and rounds to one decimal.
func measureValue(m measureIn, spec Measure, releasedN int64, pol Policy) (float64, bool) {
	if m.count == 0 || releasedN < int64(pol.MeanMinN) || m.count < int64(pol.MeanMinN) {
		return 0, false
	}
	top := m.top1
	if pol.DominanceN >= 2 {
		top += m.top2
	}
	if m.abs > 0 && top > pol.DominanceShare*m.abs {
		return 0, false
	}
	v := m.sum
	if spec.Agg == "mean" {
		v = m.sum / float64(m.count)
	}
	return math.Round(v*10) / 10, true
}

func readCells(in arrow.Record, spec Spec) ([]cell, error) {
	sc := in.Schema()
	col := func(name string) (arrow.Array, error) {
		idx := sc.FieldIndices(name)
		if len(idx) != 1 {
			return nil, fmt.Errorf("protect: the aggregate has no column %q", name)
		}
		return in.Column(idx[0]), nil
	}
	dims := make([]*array.String, len(spec.Dimensions))
	for i, d := range spec.Dimensions {
		a, err := col(d.Name)
		if err != nil {
			return nil, err
		}
		s, ok := a.(*array.String)
		if !ok {
			return nil, fmt.Errorf("protect: dimension %s is %s: expected utf8", d.Name, a.DataType())
		}
		dims[i] = s
	}
	nCol, err := col(ColN)
	if err != nil {
		return nil, err
	}
	keyCol, err := col(ColCellKey)
	if err != nil {
		return nil, err
	}
	type mcols struct{ sum, abs, top1, top2, count, sq arrow.Array }
	ms := make([]mcols, len(spec.Measures))
	for i, m := range spec.Measures {
		if m.Agg != "mean" && m.Agg != "sum" {
			return nil, fmt.Errorf("protect: measure %s: aggregation %q: expected mean or sum", m.Name, m.Agg)
		}
		for _, p := range []struct {
			dst *arrow.Array
			suf string
		}{{&ms[i].sum, SuffixSum}, {&ms[i].abs, SuffixAbs}, {&ms[i].top1, SuffixTop1}, {&ms[i].top2, SuffixTop2}, {&ms[i].count, SuffixCount}} {
			if *p.dst, err = col(m.Name + p.suf); err != nil {
				return nil, err
			}
		}
		ms[i].sq, _ = col(m.Name + SuffixSq) // optional: only pooled contributions need it
	}
	out := make([]cell, in.NumRows())
	for r := range out {
		c := cell{dims: make([]string, len(dims)), measures: make([]measureIn, len(ms))}
		for i, d := range dims {
			if d.IsNull(r) {
				c.dims[i] = Total
			} else {
				c.dims[i] = d.Value(r)
			}
		}
		if c.n, err = intAt(nCol, r); err != nil {
			return nil, err
		}
		key, err := intAt(keyCol, r)
		if err != nil {
			return nil, err
		}
		c.key = uint32(key)
		for i, m := range ms {
			mi := &c.measures[i]
			mi.sum, mi.abs, mi.top1, mi.top2 = floatAt(m.sum, r), floatAt(m.abs, r), floatAt(m.top1, r), floatAt(m.top2, r)
			mi.count, _ = intAt(m.count, r)
			mi.sq = math.NaN()
			if m.sq != nil {
				mi.sq = floatAt(m.sq, r)
			}
		}
		out[r] = c
	}
	return out, nil
}

func intAt(a arrow.Array, r int) (int64, error) {
	if a.IsNull(r) {
		return 0, nil
	}
	switch v := a.(type) {
	case *array.Int64:
		return v.Value(r), nil
	case *array.Uint64:
		return int64(v.Value(r)), nil
	case *array.Int32:
		return int64(v.Value(r)), nil
	case *array.Uint32:
		return int64(v.Value(r)), nil
	}
	return 0, fmt.Errorf("protect: column of type %s: expected an integer", a.DataType())
}

func floatAt(a arrow.Array, r int) float64 {
	if a.IsNull(r) {
		return 0
	}
	switch v := a.(type) {
	case *array.Float64:
		return v.Value(r)
	case *array.Int64:
		return float64(v.Value(r))
	}
	return math.NaN()
}

// buildFrame orders the observed cells and adds every missing combination as an empty cell.
func buildFrame(spec Spec, observed []cell) ([]cell, error) {
	domains := make([][]string, len(spec.Dimensions))
	size := 1
	for i, d := range spec.Dimensions {
		dom := append([]string{}, d.Domain...)
		if spec.Totals {
			dom = append(dom, Total)
		}
		domains[i] = dom
		if len(dom) > 0 {
			size *= len(dom)
		}
		if size > MaxCells {
			return nil, fmt.Errorf("protect: the frame has more than %d cells", MaxCells)
		}
	}
	byKey := make(map[string]int, len(observed))
	for i, c := range observed {
		for d, v := range c.dims {
			if v != Total && v != Other && len(spec.Dimensions[d].Domain) > 0 && !slices.Contains(spec.Dimensions[d].Domain, v) {
				return nil, fmt.Errorf("protect: dimension %s has a value outside its code list: refusing to release it", spec.Dimensions[d].Name)
			}
		}
		k := strings.Join(c.dims, "\x00")
		if _, dup := byKey[k]; dup {
			return nil, fmt.Errorf("protect: the aggregate has the cell %q twice", strings.Join(c.dims, ", "))
		}
		byKey[k] = i
	}
	var frame []cell
	used := make([]bool, len(observed))
	filled := true
	for _, d := range domains {
		if len(d) == 0 {
			filled = false
		}
	}
	if filled {
		forEachCombination(domains, func(dims []string) {
			if j, ok := byKey[strings.Join(dims, "\x00")]; ok {
				frame = append(frame, observed[j])
				used[j] = true
			} else {
				frame = append(frame, cell{dims: dims, measures: make([]measureIn, len(spec.Measures))})
			}
		})
	}
	// Values outside the domain (Other) are still protected cells; they follow the frame in
	// the order of their dimension values, not in the order the aggregate happened to yield
	// them, so the same data always gives the same release, row for row.
	var rest []cell
	for j, c := range observed {
		if !used[j] {
			rest = append(rest, c)
		}
	}
	slices.SortFunc(rest, func(a, b cell) int {
		return strings.Compare(strings.Join(a.dims, "\x00"), strings.Join(b.dims, "\x00"))
	})
	return append(frame, rest...), nil
}

// forEachCombination calls fn with every combination of one value from each domain, the last
// domain varying fastest; fn may keep the slice it is given.
func forEachCombination(domains [][]string, fn func(dims []string)) {
	idx := make([]int, len(domains))
	for {
		dims := make([]string, len(domains))
		for i, d := range domains {
			dims[i] = d[idx[i]]
		}
		fn(dims)
		k := len(idx) - 1
		for k >= 0 {
			idx[k]++
			if idx[k] < len(domains[k]) {
				break
			}
			idx[k] = 0
			k--
		}
		if k < 0 {
			return
		}
	}
}

// ReleaseFields is the layout of a released table of spec: the dimensions (utf8), ColN
// (int64, null when not shown), ColSuppressed, one float64 per measure and, with coverage,
// ColMissing and ColAssociations. wire.Table reads it.
func ReleaseFields(spec Spec, coverage bool) []arrow.Field {
	fields := make([]arrow.Field, 0, len(spec.Dimensions)+4+len(spec.Measures))
	for _, d := range spec.Dimensions {
		fields = append(fields, arrow.Field{Name: d.Name, Type: arrow.BinaryTypes.String})
	}
	fields = append(fields,
		arrow.Field{Name: ColN, Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		arrow.Field{Name: ColSuppressed, Type: arrow.FixedWidthTypes.Boolean})
	for _, m := range spec.Measures {
		fields = append(fields, arrow.Field{Name: m.Name, Type: arrow.PrimitiveTypes.Float64, Nullable: true})
	}
	if coverage {
		fields = append(fields,
			arrow.Field{Name: ColMissing, Type: arrow.FixedWidthTypes.Boolean},
			arrow.Field{Name: ColAssociations, Type: arrow.PrimitiveTypes.Int64})
	}
	return fields
}
