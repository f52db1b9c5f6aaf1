package executor

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/marcboeker/go-duckdb"

	"github.com/samsyn/samsyn/analysis"
	"github.com/samsyn/samsyn/node/pluginhost"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
)

// Plugins configures the analysis plugins.
type Plugins struct {
	Dir         string        // where the plugin binaries are; an analysis runs only if its binary here matches the signed hash
	Timeout     time.Duration // per call; 60 s when zero
	MemoryLimit uint64        // address space per plugin process; 2 GiB when zero
}

// ErrNoPlugin refuses an analysis whose plugin is not installed or not pinned.
var ErrNoPlugin = errors.New("analysis plugin not available on this node")

func (x *Executor) pin(e *queries.Entry) (pluginhost.Pin, error) {
	a := e.Analysis
	if a.SHA256 == "" {
		return pluginhost.Pin{}, fmt.Errorf("%w: %s is not pinned to a plugin build in the signed catalog", ErrNoPlugin, e.ID)
	}
	if x.opts.Plugins.Dir == "" {
		return pluginhost.Pin{}, fmt.Errorf("%w: no plugin directory configured", ErrNoPlugin)
	}
	return pluginhost.Pin{Path: filepath.Join(x.opts.Plugins.Dir, a.Plugin), SHA256: a.SHA256}, nil
}

// runPlugin runs e's analysis statement read-only and streams its rows to the pinned plugin.
// counts, when not nil, is filled with the model counts of the rows streamed.
func (x *Executor) runPlugin(ctx context.Context, e *queries.Entry, req *analysis.Request, b queries.Bound, counts *analysis.ModelCounts) (*analysis.Result, string, error) {
	pin, err := x.pin(e)
	if err != nil {
		return nil, "", err
	}
	q, err := e.AnalysisSQL()
	if err != nil {
		return nil, "", err
	}
	conn, snap, release, err := x.acquire(ctx)
	if err != nil {
		return nil, "", err
	}
	defer release()
	timeout := x.opts.Plugins.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION READ ONLY"); err != nil {
		return nil, "", err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	var rd array.RecordReader
	err = conn.Raw(func(dc any) error {
		ar, err := duckdb.NewArrowFromConn(dc.(driver.Conn))
		if err != nil {
			return err
		}
		pq, args := b.Positional(q)
		rd, err = ar.QueryContext(ctx, pq, args...)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("%s: %w after %s", e.ID, ErrTimeout, timeout)
		}
		return nil, "", fmt.Errorf("run %s: %w", e.ID, err)
	}
	defer rd.Release()
	var src array.RecordReader = rd
	var cr *countingReader
	if counts != nil {
		cr = newCountingReader(rd, req)
		src = cr
	}
	res, err := pluginhost.Run(ctx, pin, pluginhost.Options{Timeout: timeout, MemoryLimit: x.opts.Plugins.MemoryLimit}, req, src)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("%s: %w after %s", e.ID, ErrTimeout, timeout)
		}
		return nil, "", fmt.Errorf("analysis %s: %w", e.ID, err)
	}
	if cr != nil {
		if cr.err != nil {
			return nil, "", cr.err
		}
		*counts = cr.counts
	}
	return res, snap, nil
}

// countingReader passes a model's rows through and counts them: participants, events and
// participants per level, for the node's own checks.
type countingReader struct {
	array.RecordReader
	req    *analysis.Request
	counts analysis.ModelCounts
	err    error
}

func newCountingReader(r array.RecordReader, req *analysis.Request) *countingReader {
	c := &countingReader{RecordReader: r, req: req}
	c.counts.Levels = make([][]int64, len(req.Predictors))
	for i, p := range req.Predictors {
		c.counts.Levels[i] = make([]int64, len(p.Levels))
	}
	return c
}

func (c *countingReader) Next() bool {
	if !c.RecordReader.Next() {
		return false
	}
	rec := c.RecordReader.Record()
	idx := map[string]int{}
	for i, f := range rec.Schema().Fields() {
		idx[f.Name] = i
	}
	n := int(rec.NumRows())
	c.counts.N += int64(n)
	if y, ok := rec.Column(idx[c.req.Outcome]).(*array.Int64); ok {
		for i := 0; i < n; i++ {
			c.counts.Events += y.Value(i)
		}
	} else {
		c.err = fmt.Errorf("the outcome %s is not an integer column", c.req.Outcome)
	}
	for pi, p := range c.req.Predictors {
		pos := map[string]int{}
		for j, l := range p.Levels {
			pos[l] = j
		}
		col := rec.Column(idx[p.Name])
		for i := 0; i < n; i++ {
			var v string
			switch a := col.(type) {
			case *array.String:
				v = a.Value(i)
			case *array.StringView:
				v = a.Value(i)
			}
			if j, ok := pos[v]; ok {
				c.counts.Levels[pi][j]++
			}
		}
	}
	return true
}

// analysisAggregate runs a cells or survival analysis and returns its counts in the shape of
// the node's aggregate (dimensions with NULL for a margin, n, cell_key), every margin the sum
// of the cells below it: each participant is in one cell, so the sums are exact.
func (x *Executor) analysisAggregate(ctx context.Context, e *queries.Entry, b queries.Bound) (arrow.Record, string, error) {
	req := e.Request(b)
	res, snap, err := x.runPlugin(ctx, e, req, b, nil)
	if err != nil {
		return nil, "", err
	}
	type acc struct {
		n   int64
		key uint32
	}
	sums := map[string]*acc{}
	var order []string
	nd := len(e.Dimensions)
	sets := e.GroupingSets()
	for _, c := range res.Cells {
		if c.N == 0 {
			continue
		}
		for _, set := range sets {
			in := make([]bool, nd)
			for _, i := range set {
				in[i] = true
			}
			k := make([]string, nd)
			for i := range k {
				if in[i] {
					k[i] = "v" + c.Labels[i]
				} else {
					k[i] = "\x00"
				}
			}
			key := strings.Join(k, "\x01")
			a := sums[key]
			if a == nil {
				a = &acc{}
				sums[key] = a
				order = append(order, key)
			}
			a.n += c.N
			a.key += c.KeySum
		}
	}
	fields := make([]arrow.Field, 0, nd+2)
	for _, d := range e.Dimensions {
		fields = append(fields, arrow.Field{Name: d.Name, Type: arrow.BinaryTypes.String, Nullable: true})
	}
	fields = append(fields, arrow.Field{Name: disclosure.ColN, Type: arrow.PrimitiveTypes.Int64},
		arrow.Field{Name: disclosure.ColCellKey, Type: arrow.PrimitiveTypes.Int64})
	rb := array.NewRecordBuilder(x.opts.Allocator, arrow.NewSchema(fields, nil))
	defer rb.Release()
	for _, key := range order {
		for i, part := range strings.Split(key, "\x01") {
			sb := rb.Field(i).(*array.StringBuilder)
			if part == "\x00" {
				sb.AppendNull()
			} else {
				sb.Append(part[1:])
			}
		}
		a := sums[key]
		rb.Field(nd).(*array.Int64Builder).Append(a.n)
		rb.Field(nd + 1).(*array.Int64Builder).Append(int64(a.key))
	}
	return rb.NewRecord(), snap, nil
}

// anyAggregate is the aggregate of a table query or of a cells or survival analysis.
func (x *Executor) anyAggregate(ctx context.Context, e *queries.Entry, b queries.Bound) (arrow.Record, string, error) {
	if e.IsAnalysis() {
		if e.Analysis.Kind == queries.AnalysisLogit {
			return nil, "", fmt.Errorf("%s is a model: it is answered step by step", e.ID)
		}
		return x.analysisAggregate(ctx, e, b)
	}
	return x.aggregate(ctx, e, b)
}

// ModelStep is a node's unmasked contribution to one step of a pooled model: counts and
// statistics at coefficients, in the fixed-point layout of analysis.Request.EncodeModel.
// It refuses when the node has fewer participants than the model threshold.
func (x *Executor) ModelStep(ctx context.Context, e *queries.Entry, b queries.Bound, coefficients []float64) (*Contribution, error) {
	start := time.Now()
	req := e.Request(b)
	if len(coefficients) != req.Parameters() {
		return nil, fmt.Errorf("%w: %d coefficients for a model of %d parameters", analysis.ErrShape, len(coefficients), req.Parameters())
	}
	req.Coefficients = coefficients
	var counts analysis.ModelCounts
	res, snap, err := x.runPlugin(ctx, e, req, b, &counts)
	if err != nil {
		x.seconds.WithLabelValues("error").Observe(time.Since(start).Seconds())
		return nil, err
	}
	if res.GLM.N != counts.N {
		return nil, fmt.Errorf("%w: the plugin used %d of the %d complete cases", analysis.ErrShape, res.GLM.N, counts.N)
	}
	if counts.N < analysis.ModelThreshold {
		x.seconds.WithLabelValues("refused").Observe(time.Since(start).Seconds())
		return nil, fmt.Errorf("%w: this node has fewer than %d participants in the model", analysis.ErrModelCheck, analysis.ModelThreshold)
	}
	vec, err := req.EncodeModel(counts, *res.GLM)
	if err != nil {
		return nil, err
	}
	x.seconds.WithLabelValues("contributed").Observe(time.Since(start).Seconds())
	return &Contribution{Vector: vec, Layout: "model", Snapshot: snap, Elapsed: time.Since(start)}, nil
}
