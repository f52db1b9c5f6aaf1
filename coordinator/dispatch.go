package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/samsyn/samsyn/coordinator/fanout"
	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/queries"
)

// availability remembers, for one run of a study, the nodes that stopped answering: a node
// that misses one deadline is left out of the study's later queries, unless a quick health
// probe before a query finds it back, so one hung node costs the study one deadline, not
// one per query.
type availability struct {
	mu     sync.Mutex
	down   map[string]bool
	probed map[string]time.Time
}

// probeEvery spaces the health probes of a node found unavailable, and probeTimeout bounds
// each: a hung node costs a study one deadline and a probe now and then, not a deadline per
// query.
const (
	probeEvery   = 5 * time.Second
	probeTimeout = 500 * time.Millisecond
)

func newAvailability() *availability {
	return &availability{down: map[string]bool{}, probed: map[string]time.Time{}}
}

func (a *availability) markDown(assoc string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down[assoc] = true
	a.probed[assoc] = time.Now()
}

// usable returns the associations of order that may be asked now, probing those marked down.
func (c *Coordinator) usable(ctx context.Context, a *availability, order []string) []string {
	var out []string
	for _, assoc := range order {
		a.mu.Lock()
		down, last := a.down[assoc], a.probed[assoc]
		a.mu.Unlock()
		if down {
			n, ok := c.nodes[assoc]
			if !ok || n.Health == nil || time.Since(last) < probeEvery {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			err := n.Health(pctx)
			cancel()
			a.mu.Lock()
			a.probed[assoc] = time.Now()
			a.mu.Unlock()
			if err != nil {
				continue
			}
			a.mu.Lock()
			delete(a.down, assoc)
			a.mu.Unlock()
		}
		out = append(out, assoc)
	}
	return out
}

// refusal reads a node's refusal from its answer: the node's reason code leads the status
// message ("too_sparse", "cohort: …"). Transport failures and timeouts are not refusals.
func refusal(err error) (string, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return "", false
	}
	switch st.Code() {
	case codes.PermissionDenied, codes.FailedPrecondition, codes.InvalidArgument:
	default:
		return "", false
	}
	reason, _, _ := strings.Cut(st.Message(), ":")
	if reason == "" || strings.ContainsAny(reason, " ") {
		reason = "other"
	}
	return reason, true
}

// stalled reports an error that means the node did not answer in time.
func stalled(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded
}

// runFanOut asks targets for query qi and stores each answer the moment it arrives (check
// turns a release into the bytes to store, or refuses it; put stores one dispatch), so a
// coordinator that stops or crashes mid-fan-out never asks a node that answered again. An
// outcome cut short because the coordinator is stopping is not stored: that node is asked
// after the restart. It returns the associations that answered and those that failed.
func (c *Coordinator) runFanOut(ctx context.Context, s *study.Study, qi int, targets []fanout.Target, avail *availability,
	check func(md map[string]string, rec arrow.Record, assoc string) ([]byte, error), meta map[string]string,
	put func(ctx context.Context, id string, ds []state.Dispatch) error) (answered map[string]bool, failed map[string]string, err error) {
	answered, failed = map[string]bool{}, map[string]string{}
	var mu sync.Mutex
	var storeErr error
	opts := c.fanOutOptions(s)
	opts.Done = func(out *fanout.Outcome) {
		d := state.Dispatch{QueryIndex: qi, Association: out.Association, Attempts: out.Attempts, Metadata: meta}
		if out.Err == nil {
			raw, cerr := check(out.Release.Metadata, out.Release.Table, out.Association)
			out.Release.Table.Release()
			if cerr != nil {
				out.Err = cerr
			} else {
				d.State, d.Release, d.Metadata = state.DispatchReleased, raw, out.Release.Metadata
				c.nodeSecs.WithLabelValues(out.Association).Observe(out.Elapsed.Seconds())
				c.Seen(out.Association)
			}
			out.Release = nil
		}
		if out.Err != nil {
			if ctx.Err() != nil {
				return // stopping: not a node failure, and not stored
			}
			if reason, refused := refusal(out.Err); refused {
				c.refusals.WithLabelValues(out.Association, reason).Inc()
			} else {
				c.nodeErrors.WithLabelValues(out.Association).Inc()
			}
			d.State, d.Error = state.DispatchFailed, out.Err.Error()
			if stalled(out.Err) && avail != nil {
				avail.markDown(out.Association)
			}
		}
		perr := put(context.WithoutCancel(ctx), s.ID, []state.Dispatch{d})
		mu.Lock()
		defer mu.Unlock()
		if perr != nil {
			storeErr = errors.Join(storeErr, perr)
			return
		}
		if d.State == state.DispatchReleased {
			answered[out.Association] = true
		} else {
			failed[out.Association] = d.Error
		}
	}
	start := time.Now()
	fanout.Run(ctx, targets, opts)
	c.fanSeconds.Observe(time.Since(start).Seconds())
	if storeErr != nil {
		return nil, nil, storeErr
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return answered, failed, nil
}

// dispatch asks every approving node for every query it has not yet answered, and returns
// the associations that failed to answer some query. A study of two or more associations is
// pooled (dispatchPooled); a study of one asks that node for its own protected table.
func (c *Coordinator) dispatch(ctx context.Context, s *study.Study, approved map[string]study.Approval, order []string) ([]string, error) {
	done, err := c.o.Store.Dispatches(ctx, s.ID)
	if err != nil {
		return nil, err
	}
	have := map[[2]string]bool{}
	for _, d := range done {
		if d.State == state.DispatchReleased {
			have[[2]string{fmt.Sprint(d.QueryIndex), d.Association}] = true
		}
	}
	failed := map[string]bool{}
	avail := newAvailability()
	for qi, q := range s.Queries {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if len(order) >= 2 {
			run := c.dispatchPooled
			if e, ok := c.o.Catalog.Get(q.ID); ok && e.IsAnalysis() && e.Analysis.Kind == queries.AnalysisLogit {
				run = func(ctx context.Context, s *study.Study, qi int, approved map[string]study.Approval, approving []string, _ []state.Dispatch, avail *availability) ([]string, error) {
					return c.dispatchModel(ctx, s, qi, approved, approving, avail)
				}
			}
			missing, err := run(ctx, s, qi, approved, order, done, avail)
			if err != nil {
				return nil, err
			}
			for _, a := range missing {
				failed[a] = true
			}
			if s.OnNodeFailure == study.OnFailureFail && len(missing) > 0 {
				break
			}
			continue
		}
		var targets []fanout.Target
		up := c.usable(ctx, avail, order)
		for _, assoc := range order {
			if have[[2]string{fmt.Sprint(qi), assoc}] {
				continue
			}
			if !slices.Contains(up, assoc) {
				failed[assoc] = true // did not answer in time earlier in this study
				continue
			}
			n, ok := c.nodes[assoc]
			if !ok {
				failed[assoc] = true
				continue
			}
			c.setProgress(s.ID, assoc, NodeProgress{State: "waiting"})
			targets = append(targets, fanout.Target{Association: assoc, Node: n.Client, Ticket: c.ticketFunc(s, qi, assoc, approved[assoc], nil, 0)})
		}
		if len(targets) == 0 {
			continue
		}
		check := func(md map[string]string, rec arrow.Record, assoc string) ([]byte, error) {
			if err := checkProvenance(md, s.TicketStudy(), q, assoc); err != nil {
				return nil, err
			}
			return encode(rec)
		}
		_, bad, err := c.runFanOut(ctx, s, qi, targets, avail, check, nil, c.o.Store.PutDispatches)
		if err != nil {
			return nil, err
		}
		for a := range bad {
			failed[a] = true
		}
		if s.OnNodeFailure == study.OnFailureFail && len(failed) > 0 {
			break
		}
	}
	var missing []string
	for _, a := range order {
		if failed[a] {
			missing = append(missing, a)
		}
	}
	return missing, nil
}
