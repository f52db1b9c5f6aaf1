// Package analysis is the contract between a Samsyn node and its analysis plugins, and the
// SDK for writing one.
//
// A plugin is a separate process, started by the node through hashicorp/go-plugin (gRPC
// only, checksum pinned by the signed catalog). The node runs the catalog entry's view
// read-only, replaces the participant key by the participant's record key, and streams the
// rows to the plugin as Arrow record batches. The plugin answers with typed sufficient
// statistics of the shape the request declares, never rows: counts (with the sum of their
// record keys, so the node can perturb them) per declared cell, or the cross-products of a
// generalised linear model for the coefficients it was given. The node checks the shape,
// protects the statistics and masks them for the secure sum; nothing a plugin returns
// leaves the node any other way.
//
// To write a plugin: implement Analysis, call Serve from main, and test it in process with
// analysistest.
package analysis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/apache/arrow/go/v17/arrow/array"
)

// Kinds of analysis: what shape of statistics a plugin returns.
const (
	// KindCells returns a count and a record-key sum per declared cell (every combination of
	// the request's dimension domains, each with Other); each participant row counts in at
	// most one cell.
	KindCells = "cells"
	// KindGLM returns X'WX, X'Wz, the deviance and n of a logistic regression at the
	// request's coefficients.
	KindGLM = "glm"
)

// Other is the label of a value outside a dimension's domain.
const Other = "_other"

// Columns the node adds to every streamed batch in place of the participant key, which a
// plugin never sees.
const (
	// ColRecordKey carries the participant's record key, for the cell key of a count.
	ColRecordKey = "record_key"
	// ColParticipant numbers the participants of one call 1, 2, … (rows of the same
	// participant share it); the numbers mean nothing outside the call.
	ColParticipant = "participant"
)

// Dimension is a declared dimension of a cells analysis: the label set a plugin may use.
type Dimension struct {
	Name   string   `json:"name"`
	Domain []string `json:"domain"`
}

// Predictor is a categorical predictor of a GLM: Levels[0] is the reference level, each
// further level gets one column of the design, in order.
type Predictor struct {
	Name   string   `json:"name"`
	Levels []string `json:"levels"`
}

// Request is what a node asks of a plugin, beside the rows.
type Request struct {
	Analysis string            `json:"analysis"` // the catalog entry id
	Kind     string            `json:"kind"`
	Params   map[string]string `json:"params,omitempty"`
	Options  map[string]string `json:"options,omitempty"` // the entry's analysis options (column names, limits)

	Dimensions []Dimension `json:"dimensions,omitempty"` // KindCells

	Outcome      string      `json:"outcome,omitempty"` // KindGLM: a 0/1 column
	Predictors   []Predictor `json:"predictors,omitempty"`
	Coefficients []float64   `json:"coefficients,omitempty"`
}

// Parameters is the length of a GLM's coefficient vector: the intercept and one per
// non-reference level.
func (r *Request) Parameters() int {
	p := 1
	for _, x := range r.Predictors {
		p += len(x.Levels) - 1
	}
	return p
}

// Terms names the design's columns: "(intercept)", then "predictor=level".
func (r *Request) Terms() []string {
	out := []string{"(intercept)"}
	for _, x := range r.Predictors {
		for _, l := range x.Levels[1:] {
			out = append(out, x.Name+"="+l)
		}
	}
	return out
}

// Cell is one declared cell's count and the sum, modulo 2^32, of its participants' record keys.
type Cell struct {
	Labels []string `json:"labels"`
	N      int64    `json:"n"`
	KeySum uint32   `json:"key_sum"`
}

// GLMStats are one node's sufficient statistics of one IRLS step: with p parameters, XtWX is
// p×p row-major, XtWz has p entries.
type GLMStats struct {
	N        int64     `json:"n"`
	XtWX     []float64 `json:"xtwx"`
	XtWz     []float64 `json:"xtwz"`
	Deviance float64   `json:"deviance"`
}

// Result is a plugin's answer: Cells for KindCells, GLM for KindGLM.
type Result struct {
	Cells []Cell    `json:"cells,omitempty"`
	GLM   *GLMStats `json:"glm,omitempty"`
}

// Analysis is what a plugin implements. rows yields the view's rows; Run must not keep
// them, and returns only the statistics Request declares.
type Analysis interface {
	Run(ctx context.Context, req *Request, rows array.RecordReader) (*Result, error)
}

// ErrShape is returned by Check for an answer that is not what the request declared.
var ErrShape = errors.New("analysis answered outside its declared shape")

// Check verifies that res has exactly the shape req declares, given that rows rows were
// streamed. The node calls it on every answer before anything else touches it.
func (r *Request) Check(res *Result, rows int64) error {
	if res == nil {
		return fmt.Errorf("%w: no answer", ErrShape)
	}
	switch r.Kind {
	case KindCells:
		if res.GLM != nil {
			return fmt.Errorf("%w: a cells analysis returned model statistics", ErrShape)
		}
		seen := map[string]bool{}
		var total int64
		for _, c := range res.Cells {
			if len(c.Labels) != len(r.Dimensions) {
				return fmt.Errorf("%w: a cell has %d labels, the request declares %d dimensions", ErrShape, len(c.Labels), len(r.Dimensions))
			}
			for i, l := range c.Labels {
				if l != Other && !slices.Contains(r.Dimensions[i].Domain, l) {
					return fmt.Errorf("%w: a label of dimension %s is not in its domain", ErrShape, r.Dimensions[i].Name)
				}
			}
			k := fmt.Sprintf("%q", c.Labels)
			if seen[k] {
				return fmt.Errorf("%w: a cell is returned twice", ErrShape)
			}
			seen[k] = true
			if c.N < 0 {
				return fmt.Errorf("%w: a negative count", ErrShape)
			}
			total += c.N
		}
		if total > rows {
			return fmt.Errorf("%w: the cells count %d participants of %d rows", ErrShape, total, rows)
		}
	case KindGLM:
		g := res.GLM
		if len(res.Cells) > 0 || g == nil {
			return fmt.Errorf("%w: a model analysis returned no model statistics", ErrShape)
		}
		p := r.Parameters()
		if len(g.XtWX) != p*p || len(g.XtWz) != p {
			return fmt.Errorf("%w: statistics for %d and %d values, the model has %d parameters", ErrShape, len(g.XtWX), len(g.XtWz), p)
		}
		if g.N < 0 || g.N > rows {
			return fmt.Errorf("%w: n %d of %d rows", ErrShape, g.N, rows)
		}
		for i := 0; i < p; i++ {
			for j := 0; j < p; j++ {
				if g.XtWX[i*p+j] != g.XtWX[j*p+i] {
					return fmt.Errorf("%w: X'WX is not symmetric", ErrShape)
				}
			}
		}
		for _, v := range append(append([]float64{g.Deviance}, g.XtWX...), g.XtWz...) {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("%w: a statistic is not finite", ErrShape)
			}
		}
	default:
		return fmt.Errorf("%w: unknown kind %q", ErrShape, r.Kind)
	}
	return nil
}
