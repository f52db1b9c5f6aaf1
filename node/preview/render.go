package preview

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/samsyn/samsyn/node/executor"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
)

// Executor is what a preview needs of the node's executor.
type Executor interface {
	Aggregate(ctx context.Context, e *queries.Entry, b queries.Bound) (arrow.Record, error)
	Run(ctx context.Context, e *queries.Entry, b queries.Bound) (*executor.Result, error)
	Contribute(ctx context.Context, e *queries.Entry, b queries.Bound, federation []string) (*executor.Contribution, error)
	Policy() disclosure.Policy
}

var _ Executor = (*executor.Executor)(nil)

// Render writes the whole preview of e on the node of association: its own table (or its
// refusal), what it would contribute to a pooled study, and beside both the true counts and
// the reasons. It is for the node's own analysts only.
func Render(ctx context.Context, w io.Writer, x Executor, e *queries.Entry, b queries.Bound, association string, federation []string) error {
	truth, err := x.Aggregate(ctx, e, b)
	if err != nil {
		return err
	}
	defer truth.Release()
	fmt.Fprintf(w, "%s (%s) on node %s, parameters %v\n", e.Title.SV, e.ID, association, b.Text)
	res, err := x.Run(ctx, e, b)
	var own arrow.Record
	switch {
	case errors.Is(err, disclosure.ErrTooSparse):
		fmt.Fprintf(w, "this node's own table (a cohort of one): REFUSED, it would release nothing: %v\n", err)
	case err != nil:
		return err
	default:
		defer res.Table.Release()
		own = res.Table
		fmt.Fprintf(w, "this node's own table (a cohort of one): %d cells, %d suppressed (snapshot %s)\n", res.Report.Cells, res.Report.Suppressed, res.Snapshot)
	}
	fmt.Fprintf(w, "in a study across associations the node instead contributes every count perturbed and unsuppressed,\n"+
		"masked so that only the cohort's sum is ever seen; the threshold is applied once, to that sum.\n\n")
	rows, err := Compare(e, truth, own, x.Policy())
	if err != nil {
		return err
	}
	layout, err := e.Layout()
	if err != nil {
		return err
	}
	c, err := x.Contribute(ctx, e, b, federation)
	if err != nil {
		return err
	}
	WithContribution(rows, layout, c.Vector)
	return Print(w, e, rows)
}
