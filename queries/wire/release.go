package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/samsyn/samsyn/queries/disclosure"
)

// A released table (a node's own protected table, the coordinator's pooled or merged one) has
// these columns, found by name: one utf8 column per dimension in catalog order (a margin is
// disclosure.Total), disclosure.ColN (int64, null when not shown), disclosure.ColSuppressed
// (bool), one float64 column per measure (null when withheld) and, in a pooled release,
// disclosure.ColMissing (bool) and disclosure.ColAssociations (int64). Its provenance is
// schema metadata (Provenance). Every reader — merge, the HTTP renderer, preview, tests —
// reads it through Table, never by column position.

// Cell is one row of a released table.
type Cell struct {
	Dims       []string
	N          *int64 // nil when suppressed or missing
	Suppressed bool
	// Missing is true when only associations missing from the result could fill the cell:
	// its count is unknown, never zero.
	Missing bool
	// Associations is how many of the associations that could fill the cell are in the
	// result; -1 in a table that does not say (a node's own).
	Associations int
	Measures     []*float64
}

// Table reads a released table.
type Table struct {
	rec      arrow.Record
	dims     []*array.String
	n        *array.Int64
	sup      *array.Boolean
	measures []*array.Float64
	missing  *array.Boolean
	assoc    *array.Int64
}

// ReadTable checks rec against the layout of a released table with these dimensions and
// measures and returns a reader over it. rec stays owned by the caller.
func ReadTable(rec arrow.Record, dims, measures []string) (*Table, error) {
	sc := rec.Schema()
	col := func(name string) (arrow.Array, bool) {
		idx := sc.FieldIndices(name)
		if len(idx) != 1 {
			return nil, false
		}
		return rec.Column(idx[0]), true
	}
	t := &Table{rec: rec}
	for _, d := range dims {
		c, ok := col(d)
		s, isStr := c.(*array.String)
		if !ok || !isStr {
			return nil, fmt.Errorf("released table: no utf8 dimension column %q", d)
		}
		t.dims = append(t.dims, s)
	}
	c, ok := col(disclosure.ColN)
	if t.n, _ = c.(*array.Int64); !ok || t.n == nil {
		return nil, fmt.Errorf("released table: no int64 column %q", disclosure.ColN)
	}
	c, ok = col(disclosure.ColSuppressed)
	if t.sup, _ = c.(*array.Boolean); !ok || t.sup == nil {
		return nil, fmt.Errorf("released table: no bool column %q", disclosure.ColSuppressed)
	}
	for _, m := range measures {
		c, ok := col(m)
		f, isF := c.(*array.Float64)
		if !ok || !isF {
			return nil, fmt.Errorf("released table: no float64 measure column %q", m)
		}
		t.measures = append(t.measures, f)
	}
	if c, ok := col(disclosure.ColMissing); ok {
		if t.missing, ok = c.(*array.Boolean); !ok {
			return nil, fmt.Errorf("released table: column %q is not bool", disclosure.ColMissing)
		}
	}
	if c, ok := col(disclosure.ColAssociations); ok {
		if t.assoc, ok = c.(*array.Int64); !ok {
			return nil, fmt.Errorf("released table: column %q is not int64", disclosure.ColAssociations)
		}
	}
	return t, nil
}

// Len is the number of cells.
func (t *Table) Len() int { return int(t.rec.NumRows()) }

// Key names cell i by its dimension values, joined by "|".
func (t *Table) Key(i int) string {
	parts := make([]string, len(t.dims))
	for d, c := range t.dims {
		parts[d] = c.Value(i)
	}
	return strings.Join(parts, "|")
}

// Cell returns cell i.
func (t *Table) Cell(i int) Cell {
	c := Cell{Dims: make([]string, len(t.dims)), Suppressed: t.sup.Value(i), Associations: -1}
	for d, col := range t.dims {
		c.Dims[d] = col.Value(i)
	}
	if !t.n.IsNull(i) {
		v := t.n.Value(i)
		c.N = &v
	}
	for _, m := range t.measures {
		if m.IsNull(i) {
			c.Measures = append(c.Measures, nil)
		} else {
			v := m.Value(i)
			c.Measures = append(c.Measures, &v)
		}
	}
	if t.missing != nil {
		c.Missing = t.missing.Value(i)
	}
	if t.assoc != nil {
		c.Associations = int(t.assoc.Value(i))
	}
	return c
}

// Provenance is what a released table says of itself in its schema metadata.
type Provenance struct {
	Study        string
	QueryID      string
	QueryHash    string
	Associations []string // in the result
	Missing      []string // approving associations missing from it
	Pooled       bool     // protected once after a secure sum
	Disclosure   string   // JSON of the disclosure parameters applied
}

// Metadata is p as schema metadata.
func (p Provenance) Metadata() map[string]string {
	return map[string]string{MetaStudy: p.Study, MetaQueryID: p.QueryID, MetaQueryHash: p.QueryHash,
		MetaAssociations: strings.Join(p.Associations, ","), MetaMissing: strings.Join(p.Missing, ","),
		MetaPooled: strconv.FormatBool(p.Pooled), MetaDisclosure: p.Disclosure}
}

// ProvenanceOf reads the provenance from a released table's schema.
func ProvenanceOf(sc *arrow.Schema) Provenance {
	md := sc.Metadata()
	get := func(k string) string {
		if i := md.FindKey(k); i >= 0 {
			return md.Values()[i]
		}
		return ""
	}
	list := func(k string) []string {
		if v := get(k); v != "" {
			return strings.Split(v, ",")
		}
		return nil
	}
	return Provenance{Study: get(MetaStudy), QueryID: get(MetaQueryID), QueryHash: get(MetaQueryHash),
		Associations: list(MetaAssociations), Missing: list(MetaMissing), Pooled: get(MetaPooled) == "true", Disclosure: get(MetaDisclosure)}
}

// EncodeIPC writes rec as a one-record Arrow IPC stream, its schema metadata overridden by
// extra where keys meet.
func EncodeIPC(rec arrow.Record, extra map[string]string) ([]byte, error) {
	sc := rec.Schema()
	if len(extra) > 0 {
		md := sc.Metadata()
		var keys, vals []string
		for i, k := range md.Keys() {
			if _, replaced := extra[k]; !replaced {
				keys, vals = append(keys, k), append(vals, md.Values()[i])
			}
		}
		for k, v := range extra {
			keys, vals = append(keys, k), append(vals, v)
		}
		m := arrow.NewMetadata(keys, vals)
		sc = arrow.NewSchema(sc.Fields(), &m)
	}
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(sc))
	out := array.NewRecord(sc, rec.Columns(), rec.NumRows())
	defer out.Release()
	if err := w.Write(out); err != nil {
		return nil, fmt.Errorf("encode release: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encode release: %w", err)
	}
	return buf.Bytes(), nil
}

// DecodeIPC reads a one-record Arrow IPC stream; the caller releases the record.
func DecodeIPC(raw []byte, mem memory.Allocator) (arrow.Record, error) {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	r, err := ipc.NewReader(bytes.NewReader(raw), ipc.WithAllocator(mem))
	if err != nil {
		return nil, fmt.Errorf("decode release: %w", err)
	}
	defer r.Release()
	if !r.Next() {
		if err := r.Err(); err != nil {
			return nil, fmt.Errorf("decode release: %w", err)
		}
		return nil, errors.New("decode release: empty stream")
	}
	rec := r.Record()
	rec.Retain()
	return rec, nil
}

// Health is the body of a node's Flight health action.
type Health struct {
	Status        string `json:"status"`
	Node          string `json:"node"`
	Association   string `json:"association"`
	Snapshot      string `json:"snapshot"`
	LastImport    string `json:"last_import,omitempty"`
	SchemaVersion int    `json:"schema_version"`
	Catalog       string `json:"catalog"` // digest of the signed catalog's ids and hashes
	Queries       int    `json:"queries"`
}

// ActionHealth is the Flight action that reports a node's health.
const ActionHealth = "health"
