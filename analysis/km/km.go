// Package km is the time-to-event analysis behind Samsyn's Kaplan–Meier curves: per stratum
// and month since the start of the episode, how many reached the event and how many were
// censored. The node perturbs and masks these counts; the coordinator pools them, applies the
// survival threshold and computes the curves (Curves).
//
// Rows: the record key, the strata columns (codes), Options["time"] (whole months, an
// integer) and Options["event"] (1 when the episode ended in the event, 0 when censored).
// The request's last two dimensions are the month (codes "0", "1", … up to the last month)
// and the status (StatusEvent, StatusCensored); the ones before are the strata.
package km

import (
	"context"
	"fmt"
	"strconv"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/samsyn/samsyn/analysis"
)

// Status codes of the last dimension.
const (
	StatusEvent    = "event"
	StatusCensored = "censored"
)

// Analysis counts events and censorings per stratum and month.
type Analysis struct{}

// Run implements analysis.Analysis.
func (Analysis) Run(ctx context.Context, req *analysis.Request, rows array.RecordReader) (*analysis.Result, error) {
	nd := len(req.Dimensions)
	if req.Kind != analysis.KindCells || nd < 2 {
		return nil, fmt.Errorf("km needs a cells request with strata, month and status dimensions")
	}
	months := req.Dimensions[nd-2].Domain
	last := len(months) - 1
	for i, m := range months {
		if m != strconv.Itoa(i) {
			return nil, fmt.Errorf("km: month %d of the domain is %q, expected %d", i, m, i)
		}
	}
	timeCol, eventCol := req.Options["time"], req.Options["event"]
	if timeCol == "" || eventCol == "" {
		return nil, fmt.Errorf("km: options time and event name the columns")
	}
	strata := req.Dimensions[:nd-2]
	count := analysis.NewCounter(req)
	labels := make([]string, nd)
	err := analysis.EachRow(rows, func(r analysis.Row) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		key, err := r.Key()
		if err != nil {
			return err
		}
		t, okT, err := r.Int(timeCol)
		if err != nil {
			return err
		}
		ev, okE, err := r.Int(eventCol)
		if err != nil {
			return err
		}
		if !okT || !okE || t < 0 {
			return nil // no usable time: not in the analysis
		}
		for i, d := range strata {
			s, ok, err := r.String(d.Name)
			if err != nil {
				return err
			}
			if !ok {
				s = analysis.Other
			}
			labels[i] = s
		}
		status := StatusCensored
		if ev == 1 {
			status = StatusEvent
		}
		if t > int64(last) {
			t, status = int64(last), StatusCensored // still at risk at the end of the window
		}
		labels[nd-2], labels[nd-1] = months[t], status
		count.Add(key, labels...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return count.Result(), nil
}
