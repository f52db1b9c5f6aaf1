package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/samsyn/samsyn/analysis"
	"github.com/samsyn/samsyn/analysis/logit"
	"github.com/samsyn/samsyn/coordinator/fanout"
	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/secagg"
	"github.com/samsyn/samsyn/queries/wire"
)

// A pooled model runs as rounds of steps. Each step asks every node of the cohort for its
// masked statistics at the current coefficients; the coordinator sums them (seeing only the
// cohort's total), solves for the next coefficients and asks again, until the coefficients
// stop moving or the entry's step limit is reached. A node that does not answer a step ends
// the round: the model starts again from step 1 over the rest, with fresh masks.

// modelTolerance is the largest coefficient change at which a model has converged: well
// above the jitter of the fixed-point sums (about 1e-9), well below what a reader sees.
const modelTolerance = 1e-8

func modelRequest(e *queries.Entry, q study.Query) *analysis.Request {
	return e.Request(queries.Bound{Text: q.Params})
}

// dispatchModel runs the pooled model of query qi and returns the approving associations
// outside the cohort that answered its last step.
func (c *Coordinator) dispatchModel(ctx context.Context, s *study.Study, qi int, approved map[string]study.Approval, approving []string, avail *availability) ([]string, error) {
	q := s.Queries[qi]
	e, ok := c.o.Catalog.Get(q.ID)
	if !ok {
		return nil, fmt.Errorf("query %s left the catalog", q.ID)
	}
	req := modelRequest(e, q)
	cohort := slices.Sorted(slices.Values(c.usable(ctx, avail, approving)))
	for round := 1; len(cohort) >= 2 && round <= len(approving); round++ {
		beta := make([]float64, req.Parameters())
		failed := map[string]string{}
		for step := 1; step <= e.Analysis.Iterations(); step++ {
			stats, got, bad, err := c.modelStep(ctx, s, qi, approved, cohort, round, step, beta, req)
			if err != nil {
				return nil, err
			}
			if len(bad) > 0 {
				failed = bad
				break
			}
			if len(got) < len(cohort) {
				failed = map[string]string{"": "incomplete"}
				break
			}
			counts, g, err := req.DecodeModel(stats)
			if err != nil {
				return nil, err
			}
			if err := req.CheckModel(counts, analysis.ModelThreshold, analysis.ModelParameterShare); err != nil {
				// The check is repeated on the stored step when the result is made, and
				// withholds it there with its reason.
				c.logger.Info("model refused by its checks", "study", s.ID, "query", q.ID, "reason", err)
				return missingOf(approving, cohort), nil
			}
			next, _, err := logit.Step(g)
			if err != nil {
				c.logger.Info("model cannot be solved", "study", s.ID, "query", q.ID, "reason", err)
				return missingOf(approving, cohort), nil
			}
			moved := 0.0
			for i := range next {
				moved = math.Max(moved, math.Abs(next[i]-beta[i]))
			}
			beta = next
			if moved < modelTolerance {
				break
			}
		}
		if len(failed) == 0 {
			return missingOf(approving, cohort), nil
		}
		if s.OnNodeFailure == study.OnFailureFail {
			return missingOf(approving, nil), nil
		}
		var next []string
		for _, a := range cohort {
			if _, bad := failed[a]; !bad {
				next = append(next, a)
			}
		}
		c.logger.Info("model round incomplete; starting again over the rest", "study", s.ID, "query", q.ID, "round", round, "failed", len(failed))
		cohort = next
	}
	return missingOf(approving, nil), nil
}

// modelStep asks the cohort for one step and returns the pooled vector.
func (c *Coordinator) modelStep(ctx context.Context, s *study.Study, qi int, approved map[string]study.Approval, cohort []string, round, step int, beta []float64, req *analysis.Request) ([]uint64, map[string]bool, map[string]string, error) {
	q := s.Queries[qi]
	var targets []fanout.Target
	bad := map[string]string{}
	for _, assoc := range cohort {
		n, ok := c.nodes[assoc]
		if !ok {
			bad[assoc] = "no node"
			continue
		}
		c.setProgress(s.ID, assoc, NodeProgress{State: "waiting"})
		targets = append(targets, fanout.Target{Association: assoc, Node: n.Client,
			Ticket: c.modelTicketFunc(s, qi, assoc, approved[assoc], cohort, round, step, beta)})
	}
	if len(bad) > 0 {
		return nil, nil, bad, nil
	}
	wantKey := (&wire.Ticket{Step: step, State: beta}).StepKey()
	var mu sync.Mutex // check runs once per node, concurrently
	vecs := map[string][]uint64{}
	check := func(md map[string]string, rec arrow.Record, assoc string) ([]byte, error) {
		if err := checkProvenance(md, s.TicketStudy(), q, assoc); err != nil {
			return nil, err
		}
		switch {
		case md[wire.MetaKind] != wire.KindContribution:
			return nil, fmt.Errorf("node %s answered a model step with %q", assoc, md[wire.MetaKind])
		case md[wire.MetaCohort] != strings.Join(cohort, ",") || md[wire.MetaRound] != strconv.Itoa(round) || md[wire.MetaStep] != wantKey:
			return nil, fmt.Errorf("node %s answered for another cohort, round or step", assoc)
		case rec.NumCols() != 1 || rec.ColumnName(0) != wire.ColMasked || int(rec.NumRows()) != req.ModelLen():
			return nil, fmt.Errorf("node %s sent model statistics of the wrong shape", assoc)
		}
		col, ok := rec.Column(0).(*array.Uint64)
		if !ok {
			return nil, fmt.Errorf("node %s sent statistics that are not uint64", assoc)
		}
		mu.Lock()
		vecs[assoc] = slices.Clone(col.Uint64Values())
		mu.Unlock()
		return encode(rec)
	}
	got, failed, err := c.runFanOut(ctx, s, qi, targets, nil, check, nil, c.o.Store.PutRound)
	if err != nil || len(failed) > 0 {
		return nil, got, failed, err
	}
	mu.Lock()
	defer mu.Unlock()
	all := make([][]uint64, 0, len(cohort))
	for _, a := range cohort {
		if v, ok := vecs[a]; ok {
			all = append(all, v)
		}
	}
	if len(all) < len(cohort) {
		return nil, got, nil, nil
	}
	sum, err := secagg.Sum(all...)
	return sum, got, nil, err
}

// modelTicketFunc is ticketFunc for one model step.
func (c *Coordinator) modelTicketFunc(s *study.Study, qi int, assoc string, approval study.Approval, cohort []string, round, step int, beta []float64) func() ([]byte, error) {
	q := s.Queries[qi]
	tkt := wire.Ticket{StudyID: s.TicketStudy(), Run: s.Run, Until: standingUntil(s), QueryID: q.ID, QueryHash: q.Hash, Params: q.Params, CatalogSignature: c.o.Signatures.Signature(q.ID),
		Association: assoc, Approval: approval.Signatures[qi], Cohort: cohort, Round: round, Step: step, State: slices.Clone(beta)}
	return func() ([]byte, error) {
		t := tkt
		nonce, err := wire.NewNonce()
		if err != nil {
			return nil, err
		}
		now := time.Now()
		t.Nonce, t.NotBefore, t.Expires = nonce, now.Add(-time.Second), now.Add(c.o.TicketTTL)
		return wire.Sign(t, c.o.TicketKey)
	}
}

// Model is the summary of a released model, stored with its output checks.
type Model struct {
	N          int64   `json:"n"`
	Events     int64   `json:"events"`
	Deviance   float64 `json:"deviance"`
	Iterations int     `json:"iterations"`
	Converged  bool    `json:"converged"`
	Parameters int     `json:"parameters"`
}

// modelResult solves the model from the last complete step stored for query qi: the
// coefficients after that step, their standard errors, odds ratios with 95 % intervals.
// It returns nil when no step is complete, and errCheck-wrapped refusals.
func (c *Coordinator) modelResult(e *queries.Entry, q study.Query, dispatches []state.Dispatch, qi int) (arrow.Record, *Model, []string, map[string]string, error) {
	req := modelRequest(e, q)
	type group struct {
		cohort []string
		vecs   map[string][]byte
		snaps  map[string]string
		state  string
		step   int
	}
	groups := map[string]*group{}
	var best *group
	bestRound := 0
	for _, d := range dispatches {
		if d.QueryIndex != qi || d.State != state.DispatchReleased || d.Metadata[wire.MetaStep] == "" {
			continue
		}
		cohort, round := roundOf(d)
		key := strconv.Itoa(round) + "|" + strings.Join(cohort, ",") + "|" + d.Metadata[wire.MetaStep]
		g := groups[key]
		if g == nil {
			g = &group{cohort: cohort, vecs: map[string][]byte{}, snaps: map[string]string{}, state: d.Metadata[wire.MetaState]}
			fmt.Sscanf(d.Metadata[wire.MetaStep], "step=%d/", &g.step)
			groups[key] = g
		}
		g.vecs[d.Association] = d.Release
		g.snaps[d.Association] = d.Metadata[wire.MetaSnapshot]
		if len(g.vecs) == len(g.cohort) && (round > bestRound || (round == bestRound && best != nil && g.step > best.step)) {
			best, bestRound = g, round
		}
	}
	if best == nil {
		return nil, nil, nil, nil, nil
	}
	var beta []float64
	if err := json.Unmarshal([]byte(best.state), &beta); err != nil || len(beta) != req.Parameters() {
		return nil, nil, nil, nil, fmt.Errorf("%w: a stored model step has no readable coefficients", errCheck)
	}
	pooled, err := c.sumStored(best.cohort, best.vecs, req.ModelLen())
	if err != nil {
		return nil, nil, nil, nil, err
	}
	counts, g, err := req.DecodeModel(pooled)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if counts.N < 0 || counts.N > 1<<40 {
		return nil, nil, nil, nil, fmt.Errorf("%w: %v", errCheck, disclosure.ErrNoise)
	}
	if err := req.CheckModel(counts, analysis.ModelThreshold, analysis.ModelParameterShare); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%w: %v", errModelWithheld, err)
	}
	next, inv, err := logit.Step(g)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%w: %v", errModelWithheld, err)
	}
	moved := 0.0
	for i := range next {
		moved = math.Max(moved, math.Abs(next[i]-beta[i]))
	}
	m := &Model{N: counts.N, Events: counts.Events, Deviance: g.Deviance, Iterations: best.step, Converged: moved < 1e-6, Parameters: req.Parameters()}
	rec := modelTable(c.o.Allocator, req.Terms(), next, inv, counts.N)
	return rec, m, best.cohort, best.snaps, nil
}

var errModelWithheld = fmt.Errorf("model withheld")

func modelTable(mem memory.Allocator, terms []string, beta, inv []float64, n int64) arrow.Record {
	p := len(beta)
	fields := []arrow.Field{{Name: analysis.ColTerm, Type: arrow.BinaryTypes.String},
		{Name: disclosure.ColN, Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: disclosure.ColSuppressed, Type: arrow.FixedWidthTypes.Boolean}}
	for _, m := range analysis.ModelMeasures {
		fields = append(fields, arrow.Field{Name: m, Type: arrow.PrimitiveTypes.Float64, Nullable: true})
	}
	b := array.NewRecordBuilder(mem, arrow.NewSchema(fields, nil))
	defer b.Release()
	z := 1.959963984540054
	for i, t := range terms {
		se := math.Sqrt(inv[i*p+i])
		zs := beta[i] / se
		pv := math.Erfc(math.Abs(zs) / math.Sqrt2)
		b.Field(0).(*array.StringBuilder).Append(t)
		b.Field(1).(*array.Int64Builder).Append(n)
		b.Field(2).(*array.BooleanBuilder).Append(false)
		for j, v := range []float64{beta[i], se, zs, pv, math.Exp(beta[i]), math.Exp(beta[i] - z*se), math.Exp(beta[i] + z*se)} {
			b.Field(3 + j).(*array.Float64Builder).Append(v)
		}
	}
	return b.NewRecord()
}
