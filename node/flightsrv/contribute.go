package flightsrv

import (
	"context"
	"crypto/ecdh"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/samsyn/samsyn/analysis"
	"github.com/samsyn/samsyn/node/executor"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/audit"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/secagg"
	"github.com/samsyn/samsyn/queries/wire"
	"github.com/samsyn/samsyn/schemas"
)

// Contributor computes the node's unmasked contribution to a pooled release.
type Contributor interface {
	Contribute(ctx context.Context, e *queries.Entry, b queries.Bound, federation []string) (*executor.Contribution, error)
	ModelStep(ctx context.Context, e *queries.Entry, b queries.Bound, coefficients []float64) (*executor.Contribution, error)
}

var _ Contributor = (*executor.Executor)(nil)

// Aggregation is what the node needs to contribute to pooled releases.
type Aggregation struct {
	Contributor Contributor
	Key         *ecdh.PrivateKey            // this node's aggregation key
	Peers       map[string]*ecdh.PublicKey  // pinned keys of every association, this one's included
	Allowed     func(cohort []string) error // the node's cohort policy
	MaxCohorts  int                         // distinct cohorts per query and parameters
}

// ActionContribute is the audit action of a masked contribution.
const ActionContribute = "contribute"

// cohortLedger remembers which cohorts the node has contributed to for each query hash and
// parameters: the audit log is its durable form, replayed at start.
type cohortLedger struct {
	mu   sync.Mutex
	seen map[string]map[string]bool
}

func ledgerKey(queryHash, params string) string { return queryHash + "\x00" + params }

func (l *cohortLedger) add(queryHash, params, cohort string) {
	k := ledgerKey(queryHash, params)
	if l.seen[k] == nil {
		l.seen[k] = map[string]bool{}
	}
	l.seen[k][cohort] = true
}

func (l *cohortLedger) remember(e audit.Entry) {
	if e.Action == ActionContribute {
		l.add(e.Fields["query_hash"], e.Fields["params"], e.Fields["cohort"])
	}
}

// ActionRepeat is the audit action of an answer to a ticket the node has answered before
// (the same study, query, parameters, cohort and round, under a new nonce): the same release
// again, never a new one.
const ActionRepeat = "repeat"

// answeredSet remembers the tickets the node has answered, by everything but the nonce; its
// durable form is the audit log, replayed at start.
type answeredSet struct {
	mu   sync.Mutex
	seen map[string]bool
}

func answerKey(study, queryHash, params, cohort, round string) string {
	return strings.Join([]string{study, queryHash, params, cohort, round}, "\x00")
}

func ticketAnswerKey(t *wire.Ticket) string {
	round := ""
	if t.Pooled() {
		round = strconv.Itoa(t.Round) + stepSuffix(t.StepKey())
	}
	round += runSuffix(strconv.Itoa(t.Run))
	return answerKey(t.StudyID, t.QueryHash, paramsText(t.Params), strings.Join(t.Cohort, ","), round)
}

func (a *answeredSet) has(t *wire.Ticket) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[ticketAnswerKey(t)]
}

func (a *answeredSet) add(t *wire.Ticket) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen[ticketAnswerKey(t)] = true
}

func (a *answeredSet) remember(e audit.Entry) {
	f := e.Fields
	switch e.Action {
	case "release":
		a.seen[answerKey(f["study"], f["query_hash"], f["params"], "", runSuffix(f["run"]))] = true
	case ActionContribute:
		a.seen[answerKey(f["study"], f["query_hash"], f["params"], f["cohort"], f["round"]+stepSuffix(f["step"])+runSuffix(f["run"]))] = true
	}
}

// runSuffix marks the rerun of a standing study in an answer's key ("" for run 0): each
// rerun is a release of its own, audited as such.
func runSuffix(run string) string {
	if run == "" || run == "0" {
		return ""
	}
	return "/run=" + run
}

func stepSuffix(stepKey string) string {
	if stepKey == "" {
		return ""
	}
	return "/" + stepKey
}

// modelSteps remembers, per model run (study, query, parameters, cohort, round), the
// coefficients each step was answered at: a step is answered at one set of coefficients
// only, and no run gets more steps than its entry allows. The audit log is its durable form.
type modelSteps struct {
	mu   sync.Mutex
	seen map[string]map[int]string // run → step → step key
}

func runKey(study, queryHash, params, cohort, round string) string {
	return strings.Join([]string{study, queryHash, params, cohort, round}, "\x00")
}

func (m *modelSteps) remember(e audit.Entry) {
	f := e.Fields
	if e.Action != ActionContribute || f["step"] == "" {
		return
	}
	var step int
	fmt.Sscanf(f["step"], "step=%d/", &step)
	m.put(runKey(f["study"], f["query_hash"], f["params"], f["cohort"], f["round"]+runSuffix(f["run"])), step, f["step"])
}

func (m *modelSteps) put(run string, step int, key string) {
	if m.seen[run] == nil {
		m.seen[run] = map[int]string{}
	}
	m.seen[run][step] = key
}

// errStep refuses a model step outside its bounds or at other coefficients than before.
var errStep = errors.New("model step refused")

// errCohortLimit refuses one cohort too many for the same query and parameters.
var errCohortLimit = errors.New("this node has contributed to its limit of distinct cohorts for this query and parameters")

// contribute answers a pooled ticket: cohort policy, the node's perturbed cells, masked,
// audited, streamed. The ledger lock is held from the cohort check to the audit entry, so
// two concurrent tickets cannot both pass a limit that admits only one of them.
func (s *Server) contribute(ctx context.Context, actor string, t *wire.Ticket, e *queries.Entry, bound queries.Bound, stream flight.FlightService_DoGetServer) error {
	ag := s.opts.Aggregation
	if ag == nil {
		return s.refuse(ctx, actor, t, codes.PermissionDenied, "cohort", errors.New("this node is not configured for pooled releases"))
	}
	if err := ag.Allowed(t.Cohort); err != nil {
		return s.refuse(ctx, actor, t, codes.PermissionDenied, "cohort", err)
	}
	cohort := strings.Join(t.Cohort, ",")
	params := paramsText(t.Params)
	s.ledger.mu.Lock()
	defer s.ledger.mu.Unlock()
	known := s.ledger.seen[ledgerKey(t.QueryHash, params)]
	if !known[cohort] && len(known) >= ag.MaxCohorts {
		return s.refuse(ctx, actor, t, codes.PermissionDenied, "cohort_limit", fmt.Errorf("%w (%d)", errCohortLimit, ag.MaxCohorts))
	}
	federation := make([]string, 0, len(ag.Peers))
	for a := range ag.Peers {
		federation = append(federation, a)
	}
	model := e.IsAnalysis() && e.Analysis.Kind == queries.AnalysisLogit
	stepKey := t.StepKey()
	var res *executor.Contribution
	var err error
	if model {
		run := runKey(t.StudyID, t.QueryHash, params, cohort, strconv.Itoa(t.Round)+runSuffix(strconv.Itoa(t.Run)))
		s.steps.mu.Lock()
		prev, known := s.steps.seen[run][t.Step]
		s.steps.mu.Unlock()
		switch {
		case t.Step < 1 || t.Step > e.Analysis.Iterations():
			return s.refuse(ctx, actor, t, codes.PermissionDenied, "step_limit", fmt.Errorf("%w: step %d of at most %d", errStep, t.Step, e.Analysis.Iterations()))
		case known && prev != stepKey:
			return s.refuse(ctx, actor, t, codes.PermissionDenied, "step_replayed", fmt.Errorf("%w: step %d was answered at other coefficients", errStep, t.Step))
		}
		res, err = ag.Contributor.ModelStep(ctx, e, bound, t.State)
	} else {
		if stepKey != "" {
			return s.refuse(ctx, actor, t, codes.InvalidArgument, "malformed", errors.New("a model step for a query that is not a model"))
		}
		res, err = ag.Contributor.Contribute(ctx, e, bound, federation)
	}
	switch {
	case errors.Is(err, analysis.ErrModelCheck):
		return s.refuse(ctx, actor, t, codes.FailedPrecondition, "model_check", quiet{err})
	case errors.Is(err, executor.ErrNoPlugin):
		return s.refuse(ctx, actor, t, codes.FailedPrecondition, "no_plugin", err)
	case errors.Is(err, disclosure.ErrTooSparse):
		return s.refuse(ctx, actor, t, codes.FailedPrecondition, "too_sparse", quiet{err})
	case errors.Is(err, executor.ErrTimeout):
		return s.refuse(ctx, actor, t, codes.DeadlineExceeded, "timeout", nil)
	case err != nil:
		s.requests.WithLabelValues("error", "").Inc()
		s.logger.Error("contribution failed", "query", t.QueryID, "err", redact(err))
		return s.refuse(ctx, actor, t, codes.Internal, "error", nil)
	}
	r := secagg.Round{Study: t.StudyID, QueryID: t.QueryID, QueryHash: t.QueryHash, Params: params + stepSuffix(stepKey) + runSuffix(strconv.Itoa(t.Run)),
		Cohort: t.Cohort, Round: t.Round, Length: len(res.Vector)}
	masked, err := secagg.Mask(s.opts.Association, ag.Key, ag.Peers, r, res.Vector)
	clear(res.Vector)
	if err != nil {
		return s.refuse(ctx, actor, t, codes.PermissionDenied, "cohort", err)
	}
	rep, _ := json.Marshal(res.Report)
	action := ActionContribute
	repeat := s.answered.has(t)
	if repeat {
		action = ActionRepeat
	}
	entry, err := s.opts.Audit.Append(ctx, audit.Entry{Actor: actor, Action: action, Fields: map[string]string{
		"study": t.StudyID, "query": t.QueryID, "query_hash": t.QueryHash, "params": params,
		"nonce": hex.EncodeToString(t.Nonce), "snapshot": res.Snapshot, "cohort": cohort, "round": strconv.Itoa(t.Round),
		"layout": res.Layout, "report": string(rep), "step": stepKey, "run": strconv.Itoa(t.Run),
	}})
	if err != nil {
		s.logger.Error("audit append failed", "err", err)
		s.auditFailures.Inc()
		return status.Error(codes.Internal, "audit log unavailable: refusing to answer")
	}
	s.ledger.add(t.QueryHash, params, cohort)
	s.answered.add(t)
	if model {
		s.steps.mu.Lock()
		s.steps.put(runKey(t.StudyID, t.QueryHash, params, cohort, strconv.Itoa(t.Round)+runSuffix(strconv.Itoa(t.Run))), t.Step, stepKey)
		s.steps.mu.Unlock()
	}

	md := arrow.NewMetadata(
		[]string{wire.MetaNode, wire.MetaAssociation, wire.MetaStudy, wire.MetaQueryID, wire.MetaQueryHash, wire.MetaSnapshot,
			wire.MetaSchemaVersion, wire.MetaAuditSeq, wire.MetaAuditHead, wire.MetaKind, wire.MetaCohort, wire.MetaRound, wire.MetaLayout,
			wire.MetaStep, wire.MetaState},
		[]string{s.opts.NodeID, s.opts.Association, t.StudyID, t.QueryID, t.QueryHash, res.Snapshot,
			strconv.Itoa(schemas.Version), strconv.FormatInt(entry.Seq, 10), entry.Hash, wire.KindContribution, cohort, strconv.Itoa(t.Round), res.Layout,
			stepKey, stateJSON(t.State)})
	sc := arrow.NewSchema([]arrow.Field{{Name: wire.ColMasked, Type: arrow.PrimitiveTypes.Uint64}}, &md)
	b := array.NewUint64Builder(s.opts.Allocator)
	defer b.Release()
	b.AppendValues(masked, nil)
	col := b.NewArray()
	defer col.Release()
	rec := array.NewRecord(sc, []arrow.Array{col}, int64(len(masked)))
	defer rec.Release()
	w := flight.NewRecordWriter(stream, ipc.WithSchema(sc), ipc.WithAllocator(s.opts.Allocator))
	defer w.Close()
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if err := w.Write(rec); err != nil {
		return fmt.Errorf("stream contribution: %w", err)
	}
	s.requests.WithLabelValues("contributed", "").Inc()
	s.logger.Info("contributed", "study", t.StudyID, "query", t.QueryID, "cohort_size", len(t.Cohort), "round", t.Round, "elapsed", res.Elapsed)
	return nil
}

func stateJSON(state []float64) string {
	if len(state) == 0 {
		return ""
	}
	b, _ := json.Marshal(state)
	return string(b)
}
