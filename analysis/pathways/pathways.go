// Package pathways counts participants by their first and second intervention method: who
// moves from which method to which. It shows the plugin mechanism on a computation that is
// not one SQL aggregate: each participant's episodes are ordered by start date.
//
// Rows: one per episode, with the participant's number and record key, Options["method"] (a code) and
// Options["start"] (a date). The request's two dimensions are the first method and the
// second (whose domain holds NoSecond for participants with one episode).
package pathways

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/samsyn/samsyn/analysis"
)

// NoSecond is the second method of a participant with a single episode.
const NoSecond = "none"

// Analysis counts participants per (first, second) method.
type Analysis struct{}

type episode struct {
	start  int64
	method string
}

type person struct {
	key uint32
	eps []episode
}

// Run implements analysis.Analysis.
func (Analysis) Run(ctx context.Context, req *analysis.Request, rows array.RecordReader) (*analysis.Result, error) {
	if req.Kind != analysis.KindCells || len(req.Dimensions) != 2 {
		return nil, fmt.Errorf("pathways needs a cells request with two dimensions")
	}
	methodCol, startCol := req.Options["method"], req.Options["start"]
	if methodCol == "" || startCol == "" {
		return nil, fmt.Errorf("pathways: options method and start name the columns")
	}
	byID := map[int64]*person{}
	err := analysis.EachRow(rows, func(r analysis.Row) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		key, err := r.Key()
		if err != nil {
			return err
		}
		id, ok, err := r.Int(analysis.ColParticipant)
		if err != nil || !ok {
			return fmt.Errorf("pathways: a row without its participant number: %v", err)
		}
		start, ok, err := r.Int(startCol)
		if err != nil || !ok {
			return err
		}
		m, ok, err := r.String(methodCol)
		if err != nil {
			return err
		}
		if !ok || !slices.Contains(req.Dimensions[0].Domain, m) {
			m = analysis.Other
		}
		p := byID[id]
		if p == nil {
			p = &person{key: key}
			byID[id] = p
		}
		p.eps = append(p.eps, episode{start, m})
		return nil
	})
	if err != nil {
		return nil, err
	}
	ids := make([]int64, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	count := analysis.NewCounter(req)
	for _, id := range ids {
		eps := byID[id].eps
		sort.SliceStable(eps, func(i, j int) bool {
			if eps[i].start != eps[j].start {
				return eps[i].start < eps[j].start
			}
			return eps[i].method < eps[j].method
		})
		second := NoSecond
		if len(eps) > 1 {
			second = eps[1].method
		}
		count.Add(byID[id].key, eps[0].method, second)
	}
	return count.Result(), nil
}
