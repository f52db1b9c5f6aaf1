package preview

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/wire"
)

// Row is one cell of a preview.
type Row struct {
	Dims       []string
	True       int64 // participants in the cell (the analyst's own data)
	Released   *int64
	Suppressed bool
	Reason     string
}

// Compare lines up the protected table with the true aggregate and explains suppression.
func Compare(e *queries.Entry, truth, protected arrow.Record, pol disclosure.Policy) ([]Row, error) {
	nd := len(e.Dimensions)
	trueN := map[string]int64{}
	tn, ok := truth.Column(truth.Schema().FieldIndices(disclosure.ColN)[0]).(*array.Int64)
	if !ok {
		return nil, fmt.Errorf("preview: the aggregate's %s is not int64", disclosure.ColN)
	}
	for r := 0; r < int(truth.NumRows()); r++ {
		trueN[key(truth, nd, r)] = tn.Value(r)
	}
	dims := make([]string, nd)
	for i, d := range e.Dimensions {
		dims[i] = d.Name
	}
	ms := make([]string, len(e.Measures))
	for i, m := range e.Measures {
		ms[i] = m.Name
	}
	tbl, err := wire.ReadTable(protected, dims, ms)
	if err != nil {
		return nil, fmt.Errorf("preview: %w", err)
	}
	rows := make([]Row, 0, tbl.Len())
	for r := 0; r < tbl.Len(); r++ {
		c := tbl.Cell(r)
		k := strings.Join(c.Dims, "\x00")
		row := Row{Dims: c.Dims, True: trueN[k], Suppressed: c.Suppressed, Released: c.N}
		switch {
		case row.Suppressed && row.True == 0:
			row.Reason = "empty cell: released as suppressed, like 1–4, so that no one can tell it is empty"
		case row.Suppressed && row.True < int64(pol.Threshold):
			row.Reason = fmt.Sprintf("%d participants: fewer than %d", row.True, pol.Threshold)
		case row.Suppressed:
			row.Reason = fmt.Sprintf("%d participants, but the perturbed count falls below %d", row.True, pol.Threshold)
		case row.Released != nil && *row.Released == 0 && row.True == 0:
			row.Reason = "structural zero: the code lists rule this combination out"
		case row.Released != nil:
			row.Reason = fmt.Sprintf("released with noise %+d", *row.Released-row.True)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func key(rec arrow.Record, nd, r int) string {
	parts := make([]string, nd)
	for i := range parts {
		col := rec.Column(i).(*array.String)
		if col.IsNull(r) {
			parts[i] = disclosure.Total
		} else {
			parts[i] = col.Value(r)
		}
	}
	return strings.Join(parts, "\x00")
}

// Print writes the preview as an aligned table.
func Print(w io.Writer, e *queries.Entry, rows []Row) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, d := range e.Dimensions {
		fmt.Fprintf(tw, "%s\t", d.Name)
	}
	fmt.Fprintln(tw, "released\ttrue (local only)\twhy\t")
	for _, r := range rows {
		for _, d := range r.Dims {
			fmt.Fprintf(tw, "%s\t", d)
		}
		rel := "suppressed"
		if r.Released != nil {
			rel = fmt.Sprint(*r.Released)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t\n", rel, r.True, r.Reason)
	}
	return tw.Flush()
}
