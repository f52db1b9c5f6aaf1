package executor

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
)

// Options configure an Executor.
type Options struct {
	Association string
	Secret      []byte // the node secret: keys the record keys
	Policy      disclosure.Policy
	Timeout     time.Duration // statement deadline; 30 s when zero
	Conns       int           // connections in the pool; 2 when zero
	MemoryLimit string        // DuckDB memory_limit, e.g. "256MB"; DuckDB's default when empty
	Threads     int           // DuckDB worker threads; DuckDB's default (every core) when 0
	CacheSize   int           // protected tables kept for repeated queries; 0 disables the cache
	Plugins     Plugins       // analysis plugins
	Allocator   memory.Allocator
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// Executor runs catalog queries against one store.
type Executor struct {
	opts    Options
	store   *store.Store
	conns   chan *sql.Conn
	logger  *slog.Logger
	seconds *prometheus.HistogramVec
	cache   *releaseCache
	contrib *contributionCache

	// stmts holds each connection's prepared aggregates by statement (an entry with its
	// parameters' values written in, Bound.Inline), at most maxStmtsPerConn of them: planning
	// is a third of a small node's query time, and dashboards ask the same few again and again.
	stmtMu sync.Mutex
	stmts  map[*sql.Conn]map[string]*sql.Stmt

	// rkKey is the record-key key, derived from the node secret, held here and in each
	// connection's own temporary macro (queries.RecordKeyMacro) only.
	rkKey string
}

// ErrTimeout is returned when a query runs past its deadline.
var ErrTimeout = errors.New("query ran past its deadline")

// New prepares a pool of connections on the store with the record-key function, locks the
// database against file access, and applies the memory cap.
func New(ctx context.Context, st *store.Store, opts Options) (*Executor, error) {
	if len(opts.Secret) == 0 {
		return nil, errors.New("executor: no node secret")
	}
	pol, err := opts.Policy.Prepared()
	if err != nil {
		return nil, fmt.Errorf("executor: %w", err)
	}
	opts.Policy = pol
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Conns <= 0 {
		opts.Conns = 2
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
	x := &Executor{opts: opts, store: st, rkKey: disclosure.RecordKeySQLKey(opts.Secret), conns: make(chan *sql.Conn, opts.Conns), logger: opts.Logger.With("component", "executor"),
		cache: newReleaseCache(opts.CacheSize), contrib: newContributionCache(opts.CacheSize), stmts: map[*sql.Conn]map[string]*sql.Stmt{}}
	x.seconds = promauto.With(opts.Registerer).NewHistogramVec(prometheus.HistogramOpts{
		Name: "samsyn_node_query_duration_seconds", Help: "Time to run and protect a catalog query, by result.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}, []string{"result"})
	db := st.DB()
	// No catalog query may read a file; DuckDB does not let this be undone while open.
	setup := []string{"SET enable_external_access = false"}
	if opts.MemoryLimit != "" {
		setup = append(setup, fmt.Sprintf("SET memory_limit = '%s'", sanitizeSize(opts.MemoryLimit)))
	}
	if opts.Threads > 0 {
		setup = append(setup, fmt.Sprintf("SET threads = %d", opts.Threads))
	}
	for _, stmt := range setup {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("executor: %s: %w", stmt, err)
		}
	}
	for i := 0; i < opts.Conns; i++ {
		c, err := db.Conn(ctx)
		if err != nil {
			x.Close()
			return nil, fmt.Errorf("executor: open connection: %w", err)
		}
		// The macro is this connection's alone: DuckDB keeps temporary objects per connection.
		macro, err := queries.RecordKeyMacroSQL(x.rkKey, false)
		if err == nil {
			_, err = c.ExecContext(ctx, macro)
		}
		if err != nil {
			c.Close()
			x.Close()
			return nil, errors.New("executor: the record-key macro could not be defined") // DuckDB's message might quote the statement
		}
		x.conns <- c
	}
	return x, nil
}

func sanitizeSize(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '.' {
			out = append(out, c)
		}
	}
	return string(out)
}

// Close releases the connections, their prepared statements and the cached tables.
func (x *Executor) Close() error {
	x.cache.clear()
	x.contrib.clear()
	var errs []error
	x.stmtMu.Lock()
	for _, m := range x.stmts {
		for _, st := range m {
			errs = append(errs, st.Close())
		}
	}
	x.stmts = map[*sql.Conn]map[string]*sql.Stmt{}
	x.stmtMu.Unlock()
	for {
		select {
		case c := <-x.conns:
			errs = append(errs, c.Close())
		default:
			return errors.Join(errs...)
		}
	}
}

// Policy is the disclosure policy in force.
func (x *Executor) Policy() disclosure.Policy { return x.opts.Policy }

// Result is a protected table ready to leave the node.
type Result struct {
	Table    arrow.Record // the protected table; the caller releases it
	Report   disclosure.Report
	Snapshot string
	Elapsed  time.Duration
	Cached   bool // answered from the cache of identical earlier releases
}

// Run runs e with bound parameters and returns the protected table.
func (x *Executor) Run(ctx context.Context, e *queries.Entry, b queries.Bound) (*Result, error) {
	start := time.Now()
	if x.cache.max > 0 {
		snap, err := x.snapshot(ctx)
		if err != nil {
			return nil, err
		}
		if tbl, rep, ok := x.cache.get(cacheKey(e.Hash(), b.Text, snap)); ok {
			x.seconds.WithLabelValues("cached").Observe(time.Since(start).Seconds())
			return &Result{Table: tbl, Report: rep, Snapshot: snap, Elapsed: time.Since(start), Cached: true}, nil
		}
	}
	agg, snap, err := x.anyAggregate(ctx, e, b)
	if err != nil {
		x.seconds.WithLabelValues("error").Observe(time.Since(start).Seconds())
		return nil, err
	}
	defer agg.Release()
	var out arrow.Record
	var rep disclosure.Report
	if e.IsAnalysis() && e.Analysis.Kind == queries.AnalysisSurvival {
		out, rep, err = x.ownSurvival(e, agg)
	} else {
		out, rep, err = disclosure.Protect(x.opts.Allocator, agg, e.Spec(x.opts.Association), x.opts.Policy)
	}
	if err != nil {
		x.seconds.WithLabelValues("refused").Observe(time.Since(start).Seconds())
		return nil, err
	}
	x.seconds.WithLabelValues("released").Observe(time.Since(start).Seconds())
	x.cache.put(cacheKey(e.Hash(), b.Text, snap), out, rep)
	return &Result{Table: out, Report: rep, Snapshot: snap, Elapsed: time.Since(start)}, nil
}

// snapshot is the store's data snapshot id, kept in memory by the store.
func (x *Executor) snapshot(ctx context.Context) (string, error) { return x.store.Snapshot(ctx) }

// Aggregate returns the unprotected aggregate, with true counts, for the node's own
// analysts. It must never be exposed to a remote peer.
func (x *Executor) Aggregate(ctx context.Context, e *queries.Entry, b queries.Bound) (arrow.Record, error) {
	rec, _, err := x.anyAggregate(ctx, e, b)
	return rec, err
}

// acquire takes a connection from the pool and reads the data snapshot it will see; release
// gives the connection back.
func (x *Executor) acquire(ctx context.Context) (conn *sql.Conn, snap string, release func(), err error) {
	select {
	case conn = <-x.conns:
	case <-ctx.Done():
		return nil, "", nil, ctx.Err()
	}
	release = func() { x.conns <- conn }
	if snap, err = x.snapshot(ctx); err != nil {
		release()
		return nil, "", nil, err
	}
	return conn, snap, release, nil
}

func (x *Executor) aggregate(ctx context.Context, e *queries.Entry, b queries.Bound) (arrow.Record, string, error) {
	q, err := e.AggregateSQL()
	if err != nil {
		return nil, "", err
	}
	conn, snap, release, err := x.acquire(ctx)
	if err != nil {
		return nil, "", err
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, x.opts.Timeout)
	defer cancel()
	if q, err = b.Inline(q); err != nil {
		return nil, "", fmt.Errorf("%s: %w", e.ID, err)
	}
	stmt, err := x.prepared(ctx, conn, q)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("%s: %w after %s", e.ID, ErrTimeout, x.opts.Timeout)
		}
		return nil, "", fmt.Errorf("prepare %s: %w", e.ID, err)
	}
	rows, err := stmt.QueryContext(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("%s: %w after %s", e.ID, ErrTimeout, x.opts.Timeout)
		}
		return nil, "", fmt.Errorf("run %s: %w", e.ID, err)
	}
	defer rows.Close()
	rec, err := x.toArrow(rows, e)
	if err == nil && ctx.Err() != nil {
		// DuckDB may finish a small query before the interrupt lands: past the deadline is
		// past the deadline.
		rec.Release()
		err = ctx.Err()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("%s: %w after %s", e.ID, ErrTimeout, x.opts.Timeout)
		}
		return nil, "", fmt.Errorf("run %s: %w", e.ID, err)
	}
	return rec, snap, nil
}

// maxStmtsPerConn bounds each connection's prepared statements: a node serving the whole
// catalog over a few periods stays within it; past it they are all closed and it starts over.
const maxStmtsPerConn = 128

// prepared returns conn's prepared statement for q, preparing it once.
func (x *Executor) prepared(ctx context.Context, conn *sql.Conn, q string) (*sql.Stmt, error) {
	x.stmtMu.Lock()
	st, ok := x.stmts[conn][q]
	x.stmtMu.Unlock()
	if ok {
		return st, nil
	}
	st, err := conn.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	x.stmtMu.Lock()
	defer x.stmtMu.Unlock()
	if len(x.stmts[conn]) >= maxStmtsPerConn {
		for _, old := range x.stmts[conn] {
			old.Close() // the connection is ours until release: none of them is running
		}
		x.stmts[conn] = nil
	}
	if x.stmts[conn] == nil {
		x.stmts[conn] = map[string]*sql.Stmt{}
	}
	x.stmts[conn][q] = st
	return st, nil
}

// toArrow reads the aggregate (a few thousand cells at most) into one record.
func (x *Executor) toArrow(rows *sql.Rows, e *queries.Entry) (arrow.Record, error) {
	var fields []arrow.Field
	for _, d := range e.Dimensions {
		fields = append(fields, arrow.Field{Name: d.Name, Type: arrow.BinaryTypes.String, Nullable: true})
	}
	fields = append(fields,
		arrow.Field{Name: disclosure.ColN, Type: arrow.PrimitiveTypes.Int64},
		arrow.Field{Name: disclosure.ColCellKey, Type: arrow.PrimitiveTypes.Int64})
	for _, m := range e.Measures {
		fields = append(fields,
			arrow.Field{Name: m.Name + disclosure.SuffixSum, Type: arrow.PrimitiveTypes.Float64},
			arrow.Field{Name: m.Name + disclosure.SuffixAbs, Type: arrow.PrimitiveTypes.Float64},
			arrow.Field{Name: m.Name + disclosure.SuffixCount, Type: arrow.PrimitiveTypes.Int64},
			arrow.Field{Name: m.Name + disclosure.SuffixSq, Type: arrow.PrimitiveTypes.Float64},
			arrow.Field{Name: m.Name + disclosure.SuffixTop1, Type: arrow.PrimitiveTypes.Float64},
			arrow.Field{Name: m.Name + disclosure.SuffixTop2, Type: arrow.PrimitiveTypes.Float64})
	}
	b := array.NewRecordBuilder(x.opts.Allocator, arrow.NewSchema(fields, nil))
	defer b.Release()
	vals := make([]any, len(fields))
	ptrs := make([]any, len(fields))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if len(cols) != len(fields) {
		return nil, fmt.Errorf("aggregate has %d columns, expected %d", len(cols), len(fields))
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		for i, v := range vals {
			switch fb := b.Field(i).(type) {
			case *array.StringBuilder:
				if v == nil {
					fb.AppendNull()
				} else {
					fb.Append(fmt.Sprint(v))
				}
			case *array.Int64Builder:
				n, _ := v.(int64)
				fb.Append(n)
			case *array.Float64Builder:
				switch f := v.(type) {
				case float64:
					fb.Append(f)
				case int64:
					fb.Append(float64(f))
				default:
					fb.Append(0)
				}
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return b.NewRecord(), nil
}

// Contribution is a node's unmasked part of a pooled release: it never leaves the node
// before it is masked.
type Contribution struct {
	Vector   []uint64
	Layout   string // the layout hash
	Report   disclosure.Report
	Snapshot string
	Elapsed  time.Duration
	Cached   bool
}

// Contribute runs e with bound parameters and returns the node's perturbed, unsuppressed
// cells in the entry's pooled layout. federation lists every association, so the node can
// tell the cells only it can fill (protected as in its own release).
func (x *Executor) Contribute(ctx context.Context, e *queries.Entry, b queries.Bound, federation []string) (*Contribution, error) {
	start := time.Now()
	layout, err := e.Layout()
	if err != nil {
		return nil, err
	}
	var key string
	if x.contrib.max > 0 {
		snap, err := x.snapshot(ctx)
		if err != nil {
			return nil, err
		}
		fed := slices.Sorted(slices.Values(federation))
		key = cacheKey(e.Hash(), b.Text, snap) + "\x00" + strings.Join(fed, ",")
		if c, ok := x.contrib.get(key); ok {
			x.seconds.WithLabelValues("cached").Observe(time.Since(start).Seconds())
			c.Elapsed, c.Cached = time.Since(start), true
			return c, nil
		}
	}
	agg, snap, err := x.anyAggregate(ctx, e, b)
	if err != nil {
		x.seconds.WithLabelValues("error").Observe(time.Since(start).Seconds())
		return nil, err
	}
	defer agg.Release()
	vec, rep, err := disclosure.Contribute(agg, layout, x.opts.Policy, e.Exclusive(x.opts.Association, federation))
	if err != nil {
		x.seconds.WithLabelValues("error").Observe(time.Since(start).Seconds())
		return nil, err
	}
	x.seconds.WithLabelValues("contributed").Observe(time.Since(start).Seconds())
	out := &Contribution{Vector: vec, Layout: layout.Hash(), Report: rep, Snapshot: snap, Elapsed: time.Since(start)}
	if key != "" {
		// keyed by the snapshot the aggregate read, should an import have landed meanwhile
		fed := slices.Sorted(slices.Values(federation))
		x.contrib.put(cacheKey(e.Hash(), b.Text, snap)+"\x00"+strings.Join(fed, ","), out)
	}
	return out, nil
}

// ownSurvival is a node's own survival table: its counts perturbed as in a contribution,
// then released under the survival threshold as the coordinator would release a pool.
func (x *Executor) ownSurvival(e *queries.Entry, agg arrow.Record) (arrow.Record, disclosure.Report, error) {
	layout, err := e.Layout()
	if err != nil {
		return nil, disclosure.Report{}, err
	}
	vec, _, err := disclosure.Contribute(agg, layout, x.opts.Policy, nil)
	if err != nil {
		return nil, disclosure.Report{}, err
	}
	return disclosure.ProtectSurvival(x.opts.Allocator, layout, vec, disclosure.SurvivalThreshold,
		e.Coverage([]string{x.opts.Association}, []string{x.opts.Association}))
}
