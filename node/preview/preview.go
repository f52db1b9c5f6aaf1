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
)

// Row is one cell of a preview.
type Row struct {
	Dims       []string
	True       int64 // participants in the cell (the analyst's own data)
	Released   *int64
	Suppressed bool
	Reason     string
	// Pooled is what the node would contribute to a study across associations: its perturbed
	// count, unsuppressed (masked before it leaves), or its veto.
	Pooled string
}

// WithContribution fills each row's Pooled from the node's unmasked contribution.
func WithContribution(rows []Row, l *disclosure.Layout, vec []uint64) {
	for i := range rows {
		n, veto, ok := l.Count(vec, rows[i].Dims)
		switch {
		case !ok:
			rows[i].Pooled = "–"
		case veto:
			rows[i].Pooled = fmt.Sprintf("%d, veto (fewer than the threshold, only this association)", n)
		default:
			rows[i].Pooled = fmt.Sprint(n)
		}
	}
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
	if protected == nil {
		// the node's own table was refused whole: every cell, with its true count
		rows := make([]Row, 0, truth.NumRows())
		for r := 0; r < int(truth.NumRows()); r++ {
			k := key(truth, nd, r)
			rows = append(rows, Row{Dims: strings.Split(k, "\x00"), True: trueN[k], Suppressed: true,
				Reason: "the node's own table is refused whole (too sparse)"})
		}
		return rows, nil
	}
	tbl, err := e.ReadRelease(protected)
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
	fmt.Fprintln(tw, "own table\ttrue (local only)\twhy\tpooled contribution (masked)\t")
	for _, r := range rows {
		for _, d := range r.Dims {
			fmt.Fprintf(tw, "%s\t", d)
		}
		rel := "suppressed"
		if r.Released != nil {
			rel = fmt.Sprint(*r.Released)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t\n", rel, r.True, r.Reason, r.Pooled)
	}
	return tw.Flush()
}
