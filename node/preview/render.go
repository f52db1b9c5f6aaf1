package preview

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/samsyn/samsyn/analysis"
	"github.com/samsyn/samsyn/node/executor"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
)

// Executor is what a preview needs of the node's executor.
type Executor interface {
	Aggregate(ctx context.Context, e *queries.Entry, b queries.Bound) (arrow.Record, error)
	Run(ctx context.Context, e *queries.Entry, b queries.Bound) (*executor.Result, error)
	Contribute(ctx context.Context, e *queries.Entry, b queries.Bound, federation []string) (*executor.Contribution, error)
	ModelStep(ctx context.Context, e *queries.Entry, b queries.Bound, coefficients []float64) (*executor.Contribution, error)
	Policy() disclosure.Policy
}

var _ Executor = (*executor.Executor)(nil)

// Render writes the whole preview of e on the node of association: its own table (or its
// refusal), what it would contribute to a pooled study, and beside both the true counts and
// the reasons. It is for the node's own analysts only.
func Render(ctx context.Context, w io.Writer, x Executor, e *queries.Entry, b queries.Bound, association string, federation []string) error {
	if e.IsAnalysis() {
		switch e.Analysis.Kind {
		case queries.AnalysisLogit:
			return renderModel(ctx, w, x, e, b, association)
		case queries.AnalysisSurvival:
			return renderSurvival(ctx, w, x, e, b, association)
		}
	}
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

// renderModel shows what the node would send for a model: its counts and its own check.
func renderModel(ctx context.Context, w io.Writer, x Executor, e *queries.Entry, b queries.Bound, association string) error {
	req := e.Request(b)
	fmt.Fprintf(w, "%s (%s) on node %s, parameters %v\n", e.Title.SV, e.ID, association, b.Text)
	fmt.Fprintf(w, "a model: at each step (at most %d) this node sends X'WX, X'Wz, the deviance and the counts below,\n"+
		"masked so that only the cohort's sum is ever seen; it never answers alone.\n\n", e.Analysis.Iterations())
	c, err := x.ModelStep(ctx, e, b, make([]float64, req.Parameters()))
	if errors.Is(err, analysis.ErrModelCheck) {
		fmt.Fprintf(w, "REFUSED by this node's check, nothing would be sent: %v\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	counts, _, err := req.DecodeModel(c.Vector)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "participants in the model (complete cases): %d, of whom %d to work or studies\n", counts.N, counts.Events)
	for i, p := range req.Predictors {
		fmt.Fprintf(w, "  %s:", p.Name)
		for j, l := range p.Levels {
			flag := ""
			if counts.Levels[i][j] < analysis.ModelThreshold {
				flag = " (fewer than 10 here: the pooled model needs 10 across the cohort)"
			}
			fmt.Fprintf(w, " %s %d%s;", l, counts.Levels[i][j], flag)
		}
		fmt.Fprintln(w)
	}
	return nil
}

// renderSurvival shows the node's own survival table (a cohort of one).
func renderSurvival(ctx context.Context, w io.Writer, x Executor, e *queries.Entry, b queries.Bound, association string) error {
	fmt.Fprintf(w, "%s (%s) on node %s, parameters %v\n", e.Title.SV, e.ID, association, b.Text)
	res, err := x.Run(ctx, e, b)
	if err != nil {
		return err
	}
	defer res.Table.Release()
	fmt.Fprintf(w, "this node's own curves (a cohort of one; in a study across associations the node instead contributes\n"+
		"its perturbed counts per month, masked, and the threshold of %d at risk is applied once, to the sum):\n", disclosure.SurvivalThreshold)
	tbl, err := e.ReadRelease(res.Table)
	if err != nil {
		return err
	}
	for i := 0; i < tbl.Len(); i++ {
		c := tbl.Cell(i)
		switch {
		case c.Suppressed:
			fmt.Fprintf(w, "  %s: fewer than %d, not shown\n", c.Dims[0], disclosure.SurvivalThreshold)
		case c.N != nil && c.Measures[3] != nil:
			fmt.Fprintf(w, "  %s month %s–%.0f: %d at risk, %.0f to work or studies, %.0f censored, %.1f %% not yet\n",
				c.Dims[0], c.Dims[1], *c.Measures[0], *c.N, *c.Measures[1], *c.Measures[2], 100**c.Measures[3])
		}
	}
	return nil
}
