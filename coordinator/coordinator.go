package coordinator

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/samsyn/samsyn/coordinator/fanout"
	"github.com/samsyn/samsyn/coordinator/nodeclient"
	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/audit"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/wire"
)

// Node is one node of the federation as the coordinator knows it.
type Node struct {
	Association string
	Client      fanout.Node
	ApprovalKey ed25519.PublicKey // the association's data owner
	Health      func(ctx context.Context) error
	Status      func(ctx context.Context) (*nodeclient.Status, error) // snapshot and versions; may be nil
	// Mode is how the coordinator reaches the node: "listen" (it dials the node's Flight
	// port) or "dial-out" (the node keeps a tunnel open to the coordinator).
	Mode string
	// Tunnel, for a dial-out node, reports whether its tunnel is open and since when.
	Tunnel func() (since time.Time, open bool)
}

// Options configure a Coordinator.
type Options struct {
	ID         string
	Store      *state.Store
	Catalog    *queries.Catalog
	Signatures queries.Signatures
	Nodes      []Node
	TicketKey  ed25519.PrivateKey
	Policy     disclosure.Policy
	FanOut     fanout.Options
	TicketTTL  time.Duration // 5 min when zero
	MaxRows    int           // output check; 100,000 when zero
	MaxBytes   int           // output check; 32 MiB when zero
	Parallel   int           // studies run at once; 8 when zero
	Audit      *audit.Writer
	// StandingEvery spaces the checks for due reruns of standing studies: 1 min when zero,
	// never when negative.
	StandingEvery time.Duration
	Allocator     memory.Allocator
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Coordinator runs studies across the federation.
type Coordinator struct {
	o        Options
	logger   *slog.Logger
	nodes    map[string]Node
	wake     chan struct{}
	mu       sync.Mutex
	progress map[string]map[string]NodeProgress // study -> association -> progress
	finished map[string]chan struct{}           // closed when the study reaches a final state
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	decideLocks [64]sync.Mutex

	studies    *prometheus.CounterVec
	byState    *prometheus.GaugeVec
	fanSeconds prometheus.Histogram
	nodeSecs   *prometheus.HistogramVec
	nodeErrors *prometheus.CounterVec
	refusals   *prometheus.CounterVec
	nodeUp     *prometheus.GaugeVec
	lastSeen   *prometheus.GaugeVec
	seenAt     map[string]time.Time // guarded by mu
	ready      prometheus.Gauge
	released   prometheus.Counter
	suppressed prometheus.Counter
}

// NodeProgress is how far one node has come with a running study.
type NodeProgress struct {
	State    string    `json:"state"` // waiting, running, retrying, done, failed
	Attempts int       `json:"attempts"`
	Error    string    `json:"error,omitempty"`
	At       time.Time `json:"at"`
}

// New returns a Coordinator; call Start to run studies.
func New(o Options) (*Coordinator, error) {
	if o.Store == nil || o.Catalog == nil || len(o.TicketKey) == 0 {
		return nil, errors.New("coordinator: store, catalog and ticket key are required")
	}
	pol, err := o.Policy.Prepared()
	if err != nil {
		return nil, err
	}
	o.Policy = pol
	if o.TicketTTL <= 0 {
		o.TicketTTL = 5 * time.Minute
	}
	if o.MaxRows <= 0 {
		o.MaxRows = 100_000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 32 << 20
	}
	if o.Allocator == nil {
		o.Allocator = memory.DefaultAllocator
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	c := &Coordinator{o: o, logger: o.Logger.With("component", "coordinator"), nodes: map[string]Node{},
		wake: make(chan struct{}, 1), progress: map[string]map[string]NodeProgress{}, finished: map[string]chan struct{}{}, seenAt: map[string]time.Time{}}
	for _, n := range o.Nodes {
		c.nodes[n.Association] = n
	}
	f := promauto.With(o.Registerer)
	c.studies = f.NewCounterVec(prometheus.CounterOpts{Name: "samsyn_coordinator_study_transitions_total", Help: "Studies entering each state."}, []string{"state"})
	c.byState = f.NewGaugeVec(prometheus.GaugeOpts{Name: "samsyn_coordinator_studies", Help: "Studies by current state."}, []string{"state"})
	c.fanSeconds = f.NewHistogram(prometheus.HistogramOpts{Name: "samsyn_coordinator_fanout_duration_seconds", Help: "Time to fan one query out to all nodes.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)})
	c.nodeSecs = f.NewHistogramVec(prometheus.HistogramOpts{Name: "samsyn_coordinator_node_latency_seconds", Help: "Time for a node to answer one query.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}, []string{"association"})
	c.nodeErrors = f.NewCounterVec(prometheus.CounterOpts{Name: "samsyn_coordinator_node_errors_total", Help: "Node requests that failed after retries for want of an answer (unreachable, deadline, internal error); a node's refusal is counted in samsyn_coordinator_node_refusals_total."}, []string{"association"})
	c.refusals = f.NewCounterVec(prometheus.CounterOpts{Name: "samsyn_coordinator_node_refusals_total", Help: "Requests a node refused, by its reason (too_sparse, cohort, cohort_limit, not_allowed, expired, ...)."}, []string{"association", "reason"})
	c.nodeUp = f.NewGaugeVec(prometheus.GaugeOpts{Name: "samsyn_coordinator_node_up", Help: "1 if the node answered its last health probe, else 0."}, []string{"association"})
	c.lastSeen = f.NewGaugeVec(prometheus.GaugeOpts{Name: "samsyn_coordinator_node_last_seen_timestamp_seconds", Help: "When the node last answered a health probe or a ticket (Unix time)."}, []string{"association"})
	c.ready = f.NewGauge(prometheus.GaugeOpts{Name: "samsyn_coordinator_ready", Help: "1 while the coordinator can write its state and run studies, else 0."})
	c.released = f.NewCounter(prometheus.CounterOpts{Name: "samsyn_coordinator_results_released_total", Help: "Query results released."})
	c.suppressed = f.NewCounter(prometheus.CounterOpts{Name: "samsyn_coordinator_cells_suppressed_total", Help: "Cells suppressed after merging."})
	return c, nil
}

// Federation lists the associations with a node.
func (c *Coordinator) Federation() []string {
	out := make([]string, 0, len(c.o.Nodes))
	for _, n := range c.o.Nodes {
		out = append(out, n.Association)
	}
	return out
}

// Catalog is the signed catalog.
func (c *Coordinator) Catalog() *queries.Catalog { return c.o.Catalog }

// Nodes lists the nodes.
func (c *Coordinator) Nodes() []Node { return slices.Clone(c.o.Nodes) }

// Policy is the disclosure policy applied to merged cells.
func (c *Coordinator) Policy() disclosure.Policy { return c.o.Policy }

func (c *Coordinator) audit(ctx context.Context, actor, action string, fields map[string]string) {
	if c.o.Audit == nil {
		return
	}
	if _, err := c.o.Audit.Append(ctx, audit.Entry{Actor: actor, Action: action, Fields: fields}); err != nil {
		c.logger.Error("audit append failed", "action", action, "err", err)
	}
}

func (c *Coordinator) move(ctx context.Context, id string, from, to study.State, actor, note string) error {
	if err := c.o.Store.Move(ctx, id, from, to, actor, note); err != nil {
		return err
	}
	c.studies.WithLabelValues(string(to)).Inc()
	c.byState.WithLabelValues(string(from)).Dec()
	c.byState.WithLabelValues(string(to)).Inc()
	if to.Final() {
		c.mu.Lock()
		if ch, ok := c.finished[id]; ok {
			close(ch)
			delete(c.finished, id)
		}
		c.mu.Unlock()
	}
	c.audit(ctx, actor, "study."+string(to), map[string]string{"study": id, "note": note})
	return nil
}

// Submit validates and stores a study, then asks the associations for approval.
func (c *Coordinator) Submit(ctx context.Context, r *study.Request, evaluator string) (*study.Study, error) {
	s, err := study.Validate(r, c.o.Catalog, c.Federation(), evaluator, time.Now())
	if err != nil {
		return nil, err
	}
	if err := c.o.Store.CreateStudy(ctx, s, evaluator); err != nil {
		return nil, err
	}
	c.studies.WithLabelValues(string(study.Submitted)).Inc()
	c.byState.WithLabelValues(string(study.Submitted)).Inc()
	c.audit(ctx, evaluator, "study.submitted", map[string]string{"study": s.ID, "queries": fmt.Sprint(len(s.Queries))})
	if err := c.move(ctx, s.ID, study.Submitted, study.AwaitingApproval, "coordinator", ""); err != nil {
		return nil, err
	}
	s.State = study.AwaitingApproval
	return s, nil
}

// ErrForbidden is returned when a principal may not act on a study.
var ErrForbidden = errors.New("forbidden")

// Decide records an association's approval or refusal; when every association has decided,
// the study runs on those that approved, or is refused if none did.
func (c *Coordinator) Decide(ctx context.Context, id string, a study.Approval) error {
	// Decisions on one study are taken one at a time, so the last of several concurrent
	// approvals moves the study once and every stored decision is answered with success.
	mu := &c.decideLocks[stripe(id)]
	mu.Lock()
	defer mu.Unlock()
	s, err := c.o.Store.Study(ctx, id)
	if err != nil {
		return err
	}
	if !slices.Contains(s.Associations, a.Association) {
		return fmt.Errorf("%w: study %s does not involve %s", ErrForbidden, id, a.Association)
	}
	if s.State != study.AwaitingApproval {
		return fmt.Errorf("%w: study %s is %s, not awaiting approval", state.ErrConflict, id, s.State)
	}
	n, ok := c.nodes[a.Association]
	if !ok {
		return fmt.Errorf("no node for %s", a.Association)
	}
	if err := study.CheckApproval(s, a, n.ApprovalKey); err != nil {
		return err
	}
	a.At = time.Now().UTC()
	if err := c.o.Store.PutApproval(ctx, id, a); err != nil {
		return err
	}
	c.audit(ctx, a.Actor, "study."+string(a.Decision), map[string]string{"study": id, "association": a.Association, "reason": a.Reason})
	decided, err := c.o.Store.Approvals(ctx, id)
	if err != nil {
		return err
	}
	if len(decided) < len(s.Associations) {
		return nil
	}
	approved := 0
	for _, d := range decided {
		if d.Decision == study.Approve {
			approved++
		}
	}
	if approved == 0 {
		return c.move(ctx, id, study.AwaitingApproval, study.Refused, "coordinator", "every association refused")
	}
	if err := c.move(ctx, id, study.AwaitingApproval, study.Running, "coordinator", fmt.Sprintf("%d of %d associations approved", approved, len(s.Associations))); err != nil {
		return err
	}
	c.Wake()
	return nil
}

// stripe picks the decision lock of a study.
func stripe(id string) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return int(h % 64)
}

// Wake asks the worker to look for running studies.
func (c *Coordinator) Wake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Start runs the worker until Stop. It first resumes every study a previous run left in
// running or checking, so a restart loses nothing. Up to Parallel studies run at once.
func (c *Coordinator) Start(ctx context.Context) {
	if all, err := c.o.Store.Studies(ctx, ""); err == nil {
		for _, s := range all {
			c.byState.WithLabelValues(string(s.State)).Inc()
		}
	}
	ctx, c.cancel = context.WithCancel(ctx)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.watch(ctx)
	}()
	if every := c.o.StandingEvery; every >= 0 {
		if every == 0 {
			every = time.Minute
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if _, err := c.RerunStanding(ctx, time.Now(), false); err != nil && ctx.Err() == nil {
					c.logger.Error("standing studies: reruns not started", "err", err)
				}
			}
		}()
	}
	parallel := c.o.Parallel
	if parallel <= 0 {
		parallel = 8
	}
	slots := make(chan struct{}, parallel)
	inFlight := map[string]bool{}
	var mu sync.Mutex
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.Wake()
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.wake:
			}
			pending, err := c.o.Store.Studies(ctx, "", study.Running, study.Checking)
			if err != nil {
				if ctx.Err() == nil {
					c.logger.Error("list running studies", "err", err)
				}
				continue
			}
			for _, s := range pending {
				mu.Lock()
				busy := inFlight[s.ID]
				inFlight[s.ID] = true
				mu.Unlock()
				if busy {
					continue
				}
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					return
				}
				c.wg.Add(1)
				go func() {
					defer c.wg.Done()
					err := c.process(ctx, s)
					mu.Lock()
					delete(inFlight, s.ID)
					mu.Unlock()
					<-slots
					if err != nil && ctx.Err() == nil {
						// Left in running or checking: try again later, not in a tight loop.
						c.logger.Error("study did not finish; retrying in 5 s", "study", s.ID, "err", err)
						time.AfterFunc(5*time.Second, c.Wake)
					}
				}()
			}
		}
	}()
}

// watchEvery spaces the health probes behind samsyn_coordinator_node_up and the readiness
// gauge.
const watchEvery = 15 * time.Second

// watch probes every node's health and the state's writability until ctx ends.
func (c *Coordinator) watch(ctx context.Context) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, n := range c.o.Nodes {
			if n.Health == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				if err := n.Health(pctx); err != nil {
					c.nodeUp.WithLabelValues(n.Association).Set(0)
					return
				}
				c.nodeUp.WithLabelValues(n.Association).Set(1)
				c.Seen(n.Association)
			}()
		}
		wg.Wait()
		if err := c.o.Store.Ready(ctx); err != nil {
			c.ready.Set(0)
		} else {
			c.ready.Set(1)
		}
		select {
		case <-ctx.Done():
			c.ready.Set(0)
			return
		case <-t.C:
		}
	}
}

// Seen records that the node answered now.
func (c *Coordinator) Seen(assoc string) {
	now := time.Now()
	c.lastSeen.WithLabelValues(assoc).Set(float64(now.Unix()))
	c.mu.Lock()
	c.seenAt[assoc] = now
	c.mu.Unlock()
}

// LastSeen is when the node last answered a health probe or a ticket (zero: not yet).
func (c *Coordinator) LastSeen(assoc string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seenAt[assoc]
}

// Stop stops the worker and waits for it.
func (c *Coordinator) Stop() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
}

// Await blocks until study id reaches a final state (or ctx ends) and returns it.
func (c *Coordinator) Await(ctx context.Context, id string) (*study.Study, error) {
	c.mu.Lock()
	ch, ok := c.finished[id]
	if !ok {
		ch = make(chan struct{})
		c.finished[id] = ch
	}
	c.mu.Unlock()
	s, err := c.o.Store.Study(ctx, id)
	if err != nil || s.State.Final() {
		return s, err
	}
	select {
	case <-ch:
		return c.o.Store.Study(ctx, id)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Progress returns the live per-node progress of a running study.
func (c *Coordinator) Progress(id string) map[string]NodeProgress {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]NodeProgress{}
	for k, v := range c.progress[id] {
		out[k] = v
	}
	return out
}

func (c *Coordinator) setProgress(id, assoc string, p NodeProgress) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.progress[id] == nil {
		c.progress[id] = map[string]NodeProgress{}
	}
	p.At = time.Now().UTC()
	c.progress[id][assoc] = p
}

// process takes a running (or checking) study to its end.
func (c *Coordinator) process(ctx context.Context, s *study.Study) error {
	approvals, err := c.o.Store.Approvals(ctx, s.ID)
	if err != nil {
		return err
	}
	approved := map[string]study.Approval{}
	var order []string
	for _, a := range approvals {
		if a.Decision == study.Approve {
			approved[a.Association] = a
			order = append(order, a.Association)
		}
	}
	if s.State == study.Running {
		missing, err := c.dispatch(ctx, s, approved, order)
		if err != nil {
			return err
		}
		if len(missing) > 0 && s.OnNodeFailure == study.OnFailureFail {
			return c.move(ctx, s.ID, study.Running, study.Failed, "coordinator", "no answer from "+fmt.Sprint(missing))
		}
		if err := c.move(ctx, s.ID, study.Running, study.Checking, "coordinator", ""); err != nil {
			return err
		}
	}
	withheld, err := c.check(ctx, s, order)
	if err != nil {
		if errors.Is(err, errCheck) {
			return c.move(ctx, s.ID, study.Checking, study.Failed, "coordinator", err.Error())
		}
		return err
	}
	note := ""
	if len(withheld) > 0 {
		note = "no node released " + strings.Join(withheld, ", ")
	}
	return c.move(ctx, s.ID, study.Checking, study.Released, "coordinator", note)
}

// ticketFunc returns a ticket maker for one node: each call signs a fresh nonce and window.
// A cohort of two or more asks for a masked contribution to round round of that cohort.
func (c *Coordinator) ticketFunc(s *study.Study, qi int, assoc string, approval study.Approval, cohort []string, round int) func() ([]byte, error) {
	q := s.Queries[qi]
	tkt := wire.Ticket{StudyID: s.TicketStudy(), Run: s.Run, Until: standingUntil(s), QueryID: q.ID, QueryHash: q.Hash, Params: q.Params, CatalogSignature: c.o.Signatures.Signature(q.ID),
		Association: assoc, Approval: approval.Signatures[qi], Cohort: cohort, Round: round}
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

// fanOutOptions are the fan-out options for s, reporting progress per node.
func (c *Coordinator) fanOutOptions(s *study.Study) fanout.Options {
	opts := c.o.FanOut
	opts.FailFast = s.OnNodeFailure == study.OnFailureFail
	opts.Progress = func(assoc, st string, attempt int, err error) {
		p := NodeProgress{State: st, Attempts: attempt}
		if err != nil {
			p.Error = err.Error()
		}
		c.setProgress(s.ID, assoc, p)
	}
	return opts
}

func checkProvenance(md map[string]string, studyID string, q study.Query, assoc string) error {
	switch {
	case md[wire.MetaStudy] != studyID, md[wire.MetaQueryID] != q.ID, md[wire.MetaQueryHash] != q.Hash:
		return fmt.Errorf("node %s answered for another study or query", assoc)
	case md[wire.MetaAssociation] != assoc:
		return fmt.Errorf("node %s answered as %q", assoc, md[wire.MetaAssociation])
	}
	return nil
}

func encode(rec arrow.Record) ([]byte, error) { return wire.EncodeIPC(rec, nil) }

func decode(raw []byte, mem memory.Allocator) (arrow.Record, error) { return wire.DecodeIPC(raw, mem) }

// Decode reads a stored result's table (Arrow IPC stream).
func Decode(raw []byte) (arrow.Record, error) { return wire.DecodeIPC(raw, memory.DefaultAllocator) }

// standingUntil is the end of a standing study's approvals (zero for a one-off study).
func standingUntil(s *study.Study) time.Time {
	if s.Standing == nil {
		return time.Time{}
	}
	return s.Standing.Until
}
