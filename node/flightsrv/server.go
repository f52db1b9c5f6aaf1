package flightsrv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/samsyn/samsyn/node/executor"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/audit"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/wire"
	"github.com/samsyn/samsyn/queries/wire/mtls"
	"github.com/samsyn/samsyn/schemas"
)

// Runner runs a catalog query and returns the protected table.
type Runner interface {
	Run(ctx context.Context, e *queries.Entry, b queries.Bound) (*executor.Result, error)
}

// Auditor appends to the node's audit log.
type Auditor interface {
	Append(ctx context.Context, e audit.Entry) (audit.Entry, error)
}

var _ Runner = (*executor.Executor)(nil)
var _ Auditor = (*audit.Writer)(nil)

// Options configure the service.
type Options struct {
	NodeID      string
	Association string
	Catalog     *queries.Catalog // the verified, signed catalog
	Runner      Runner
	Audit       Auditor
	// Verifier holds the keys and the nonce store; the service fills in Association,
	// Catalog and Allowed from its own catalog and policy.
	Verifier wire.Verifier
	Allowed  func(queryID string) error // the node's own policy on which queries it answers; nil denies all
	// Snapshot reports the store's data snapshot id, for the health action.
	Snapshot func(ctx context.Context) (string, error)
	// LastImport reports when the store was last imported into, for the health action.
	LastImport func(ctx context.Context) (time.Time, error)
	// Aggregation lets the node contribute to pooled releases; nil answers only tickets
	// for the node's own table.
	Aggregation *Aggregation
	// History replays the node's audit log at start: the tickets answered (a repeat is
	// audited as such), the cohorts joined, and the nonces still within their lifetime (a
	// restart does not make a used ticket usable again).
	History    func(fn func(audit.Entry)) error
	Allocator  memory.Allocator
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Server implements flight.FlightServer for DoGet.
type Server struct {
	flight.BaseFlightServer
	opts          Options
	logger        *slog.Logger
	requests      *prometheus.CounterVec
	cells         *prometheus.CounterVec
	auditFailures prometheus.Counter
	catalogSum    string
	ledger        cohortLedger
	answered      answeredSet
	steps         modelSteps
}

// New returns the service.
func New(opts Options) (*Server, error) {
	if opts.Catalog == nil || opts.Runner == nil || opts.Audit == nil {
		return nil, errors.New("flight service: catalog, runner and audit are required")
	}
	if opts.Allocator == nil {
		opts.Allocator = memory.DefaultAllocator
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	v := &opts.Verifier
	v.Association = opts.Association
	v.Catalog = func(id string) (string, bool) {
		e, ok := opts.Catalog.Get(id)
		if !ok {
			return "", false
		}
		return e.Hash(), true
	}
	allowed := opts.Allowed
	v.Allowed = func(id, _ string) error {
		if allowed == nil {
			return errors.New("this node has no allowed queries (deny by default)")
		}
		return allowed(id)
	}
	s := &Server{opts: opts, logger: opts.Logger.With("component", "flight"), ledger: cohortLedger{seen: map[string]map[string]bool{}},
		answered: answeredSet{seen: map[string]bool{}}, steps: modelSteps{seen: map[string]map[int]string{}}}
	if ag := opts.Aggregation; ag != nil {
		if ag.Contributor == nil || ag.Key == nil || ag.Allowed == nil || ag.MaxCohorts < 1 {
			return nil, errors.New("flight service: aggregation needs a contributor, a key, a cohort policy and max cohorts")
		}
		if pub, ok := ag.Peers[opts.Association]; !ok || !pub.Equal(ag.Key.PublicKey()) {
			return nil, fmt.Errorf("flight service: the pinned aggregation key of %s is not this node's (aggregation.peers)", opts.Association)
		}
	}
	if opts.History != nil {
		now := time.Now()
		horizon := wire.MaxLifetime + 2*wire.DefaultSkew
		err := opts.History(func(e audit.Entry) {
			s.ledger.remember(e)
			s.answered.remember(e)
			s.steps.remember(e)
			if n, err := hex.DecodeString(e.Fields["nonce"]); err == nil && len(n) == wire.NonceSize && v.Nonces != nil && e.Time.Add(horizon).After(now) {
				_, _ = v.Nonces.Remember(context.Background(), n, e.Time.Add(horizon))
			}
		})
		if err != nil {
			return nil, fmt.Errorf("flight service: replay the audit log: %w", err)
		}
	}
	f := promauto.With(opts.Registerer)
	s.requests = f.NewCounterVec(prometheus.CounterOpts{
		Name: "samsyn_node_flight_requests_total", Help: "DoGet requests by result (released, refused, error) and reason.",
	}, []string{"result", "reason"})
	s.auditFailures = f.NewCounter(prometheus.CounterOpts{
		Name: "samsyn_node_audit_write_failures_total", Help: "Audit entries that could not be written; the request was refused.",
	})
	s.cells = f.NewCounterVec(prometheus.CounterOpts{
		Name: "samsyn_node_cells_total", Help: "Cells in released tables, by whether they were suppressed.",
	}, []string{"suppressed"})
	h := sha256.New()
	for _, id := range opts.Catalog.IDs() {
		e, _ := opts.Catalog.Get(id)
		fmt.Fprintf(h, "%s %s\n", id, e.Hash())
	}
	s.catalogSum = hex.EncodeToString(h.Sum(nil))[:16]
	return s, nil
}

// peerIdentity names the verified client for the audit log.
func peerIdentity(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "unknown"
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		if ids := mtls.Identities(ti.State.PeerCertificates[0]); len(ids) > 0 {
			return ids[0]
		}
	}
	return "unauthenticated"
}

func paramsText(p map[string]string) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + p[k]
	}
	return strings.Join(parts, "&")
}

// quiet marks a refusal detail that goes to the node's audit log but not to the caller.
type quiet struct{ error }

// refuse audits a refusal, with its detail, and returns the gRPC error the caller sees.
func (s *Server) refuse(ctx context.Context, actor string, t *wire.Ticket, code codes.Code, reason string, detail error) error {
	fields := map[string]string{"reason": reason}
	if detail != nil {
		fields["detail"] = detail.Error()
	}
	if t != nil {
		fields["study"], fields["query"], fields["query_hash"] = t.StudyID, t.QueryID, t.QueryHash
		fields["params"], fields["nonce"] = paramsText(t.Params), hex.EncodeToString(t.Nonce)
	}
	if _, err := s.opts.Audit.Append(ctx, audit.Entry{Actor: actor, Action: "refuse", Fields: fields}); err != nil {
		s.logger.Error("audit append failed", "err", err)
		s.auditFailures.Inc()
		return status.Error(codes.Internal, "audit log unavailable: refusing to answer")
	}
	s.requests.WithLabelValues("refused", reason).Inc()
	s.logger.Info("request refused", "actor", actor, "reason", reason)
	if _, isQuiet := detail.(quiet); detail == nil || isQuiet {
		return status.Error(code, reason)
	}
	return status.Error(code, reason+": "+detail.Error())
}

// DoGet verifies the ticket, runs the query and streams the protected table.
func (s *Server) DoGet(tkt *flight.Ticket, stream flight.FlightService_DoGetServer) error {
	ctx := stream.Context()
	actor := peerIdentity(ctx)
	t, err := wire.Verify(ctx, tkt.GetTicket(), s.opts.Verifier)
	if err != nil {
		return s.refuse(ctx, actor, nil, codes.PermissionDenied, wire.Reason(err), err)
	}
	e, ok := s.opts.Catalog.Get(t.QueryID)
	if !ok {
		return s.refuse(ctx, actor, t, codes.PermissionDenied, "hash_mismatch", nil)
	}
	bound, err := e.Bind(t.Params)
	if err != nil {
		return s.refuse(ctx, actor, t, codes.InvalidArgument, "bad_params", err)
	}
	if t.Pooled() {
		return s.contribute(ctx, actor, t, e, bound, stream)
	}
	if e.IsAnalysis() && e.Analysis.Kind == queries.AnalysisLogit {
		// A node's own model statistics would show the coordinator this node's cross-products.
		return s.refuse(ctx, actor, t, codes.FailedPrecondition, "pooled_only", errors.New("a model is answered only as part of a pooled cohort"))
	}
	res, err := s.opts.Runner.Run(ctx, e, bound)
	switch {
	case errors.Is(err, executor.ErrNoPlugin):
		return s.refuse(ctx, actor, t, codes.FailedPrecondition, "no_plugin", err)
	case errors.Is(err, disclosure.ErrTooSparse):
		// The counts behind the refusal say how many cells are empty: keep them in the
		// node's own audit log, not in the answer.
		return s.refuse(ctx, actor, t, codes.FailedPrecondition, "too_sparse", quiet{err})
	case errors.Is(err, executor.ErrTimeout):
		return s.refuse(ctx, actor, t, codes.DeadlineExceeded, "timeout", nil)
	case err != nil:
		s.requests.WithLabelValues("error", "").Inc()
		s.logger.Error("query failed", "query", t.QueryID, "err", redact(err))
		return s.refuse(ctx, actor, t, codes.Internal, "error", nil)
	}
	defer res.Table.Release()

	rep, _ := json.Marshal(res.Report)
	action := "release"
	if s.answered.has(t) {
		action = ActionRepeat
	}
	entry, err := s.opts.Audit.Append(ctx, audit.Entry{Actor: actor, Action: action, Fields: map[string]string{
		"study": t.StudyID, "query": t.QueryID, "query_hash": t.QueryHash, "params": paramsText(t.Params),
		"nonce": hex.EncodeToString(t.Nonce), "snapshot": res.Snapshot, "cells": strconv.Itoa(res.Report.Cells),
		"suppressed": strconv.Itoa(res.Report.Suppressed), "report": string(rep), "run": strconv.Itoa(t.Run),
	}})
	if err != nil {
		s.logger.Error("audit append failed", "err", err)
		s.auditFailures.Inc()
		return status.Error(codes.Internal, "audit log unavailable: refusing to answer")
	}
	s.answered.add(t)
	rec := withProvenance(res.Table, map[string]string{
		wire.MetaNode: s.opts.NodeID, wire.MetaAssociation: s.opts.Association, wire.MetaStudy: t.StudyID,
		wire.MetaQueryID: t.QueryID, wire.MetaQueryHash: t.QueryHash, wire.MetaSnapshot: res.Snapshot,
		wire.MetaSchemaVersion: strconv.Itoa(schemas.Version), wire.MetaAuditSeq: strconv.FormatInt(entry.Seq, 10), wire.MetaAuditHead: entry.Hash, wire.MetaKind: wire.KindTable,
	})
	defer rec.Release()
	w := flight.NewRecordWriter(stream, ipc.WithSchema(rec.Schema()), ipc.WithAllocator(s.opts.Allocator))
	defer w.Close()
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if err := w.Write(rec); err != nil {
		return fmt.Errorf("stream release: %w", err)
	}
	s.requests.WithLabelValues("released", "").Inc()
	s.cells.WithLabelValues("true").Add(float64(res.Report.Suppressed))
	s.cells.WithLabelValues("false").Add(float64(res.Report.Cells - res.Report.Suppressed))
	s.logger.Info("released", "study", t.StudyID, "query", t.QueryID, "cells", res.Report.Cells, "suppressed", res.Report.Suppressed, "elapsed", res.Elapsed.Round(time.Microsecond))
	return nil
}

// withProvenance returns rec with extra schema metadata.
func withProvenance(rec arrow.Record, extra map[string]string) arrow.Record {
	md := rec.Schema().Metadata()
	keys, vals := append([]string{}, md.Keys()...), append([]string{}, md.Values()...)
	for k, v := range extra {
		keys, vals = append(keys, k), append(vals, v)
	}
	m := arrow.NewMetadata(keys, vals)
	sc := arrow.NewSchema(rec.Schema().Fields(), &m)
	cols := rec.Columns()
	return array.NewRecord(sc, cols, rec.NumRows())
}

// ListActions names the health action.
func (s *Server) ListActions(_ *flight.Empty, stream flight.FlightService_ListActionsServer) error {
	return stream.Send(&flight.ActionType{Type: wire.ActionHealth, Description: "status, data snapshot, schema and catalog versions"})
}

// DoAction answers the health action; every other action is refused.
func (s *Server) DoAction(a *flight.Action, stream flight.FlightService_DoActionServer) error {
	if a.GetType() != wire.ActionHealth {
		return status.Errorf(codes.Unimplemented, "unknown action %q: this node answers %q", a.GetType(), wire.ActionHealth)
	}
	h := wire.Health{Status: "serving", Node: s.opts.NodeID, Association: s.opts.Association, SchemaVersion: schemas.Version,
		Catalog: s.catalogSum, Queries: len(s.opts.Catalog.Entries)}
	if s.opts.Snapshot != nil {
		snap, err := s.opts.Snapshot(stream.Context())
		if err != nil {
			return status.Error(codes.Unavailable, "store unavailable")
		}
		h.Snapshot = snap
	}
	if s.opts.LastImport != nil {
		if t, err := s.opts.LastImport(stream.Context()); err == nil && !t.IsZero() {
			h.LastImport = t.UTC().Format(time.RFC3339)
		}
	}
	body, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return stream.Send(&flight.Result{Body: body})
}

var quoted = regexp.MustCompile(`'[^']*'|"[^"]*"`)

// redact drops quoted values from an error before it is logged: a DuckDB error can quote a
// value from the data, and the log is not the place for participant data.
func redact(err error) string {
	return quoted.ReplaceAllString(err.Error(), "'…'")
}
