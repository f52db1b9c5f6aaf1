package analysis

import (
	"fmt"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
)

// Row reads one row of a streamed batch by column name. Values come as the node sends them:
// codes as strings, numbers as integers or floats, dates as days since 1970-01-01.
type Row struct {
	rec arrow.Record
	idx map[string]int
	i   int
}

// EachRow calls fn for every row of rows, in order, and stops at its first error.
func EachRow(rows array.RecordReader, fn func(Row) error) error {
	for rows.Next() {
		rec := rows.Record()
		idx := make(map[string]int, rec.NumCols())
		for i, f := range rec.Schema().Fields() {
			idx[f.Name] = i
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			if err := fn(Row{rec: rec, idx: idx, i: i}); err != nil {
				return err
			}
		}
	}
	return rows.Err()
}

func (r Row) col(name string) (arrow.Array, error) {
	i, ok := r.idx[name]
	if !ok {
		return nil, fmt.Errorf("no column %q in the rows", name)
	}
	return r.rec.Column(i), nil
}

// String reads a code; ok is false for NULL.
func (r Row) String(name string) (s string, ok bool, err error) {
	c, err := r.col(name)
	if err != nil || c.IsNull(r.i) {
		return "", false, err
	}
	switch a := c.(type) {
	case *array.String:
		return a.Value(r.i), true, nil
	case *array.LargeString:
		return a.Value(r.i), true, nil
	case *array.StringView:
		return a.Value(r.i), true, nil
	}
	return "", false, fmt.Errorf("column %q is %s, not text", name, c.DataType())
}

// Int reads an integer, a boolean (0 or 1) or a date (days since 1970-01-01); ok is false
// for NULL.
func (r Row) Int(name string) (v int64, ok bool, err error) {
	c, err := r.col(name)
	if err != nil || c.IsNull(r.i) {
		return 0, false, err
	}
	switch a := c.(type) {
	case *array.Int64:
		return a.Value(r.i), true, nil
	case *array.Int32:
		return int64(a.Value(r.i)), true, nil
	case *array.Int16:
		return int64(a.Value(r.i)), true, nil
	case *array.Int8:
		return int64(a.Value(r.i)), true, nil
	case *array.Uint32:
		return int64(a.Value(r.i)), true, nil
	case *array.Date32:
		return int64(a.Value(r.i)), true, nil
	case *array.Boolean:
		if a.Value(r.i) {
			return 1, true, nil
		}
		return 0, true, nil
	}
	return 0, false, fmt.Errorf("column %q is %s, not an integer", name, c.DataType())
}

// Key reads the row's record key.
func (r Row) Key() (uint32, error) {
	v, ok, err := r.Int(ColRecordKey)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("a row has no record key")
	}
	return uint32(v), nil
}

// Counter adds participants to the cells of a cells analysis.
type Counter struct {
	dims  int
	cells map[string]*Cell
	order []string
}

// NewCounter counts into cells of req's dimensions.
func NewCounter(req *Request) *Counter {
	return &Counter{dims: len(req.Dimensions), cells: map[string]*Cell{}}
}

// Add counts one participant, with its record key, in the cell labels.
func (c *Counter) Add(key uint32, labels ...string) {
	k := fmt.Sprintf("%q", labels)
	cell := c.cells[k]
	if cell == nil {
		cell = &Cell{Labels: append([]string(nil), labels...)}
		c.cells[k] = cell
		c.order = append(c.order, k)
	}
	cell.N++
	cell.KeySum += key
}

// Result is the counted cells, in the order first seen.
func (c *Counter) Result() *Result {
	out := &Result{Cells: make([]Cell, 0, len(c.order))}
	for _, k := range c.order {
		out.Cells = append(out.Cells, *c.cells[k])
	}
	return out
}
