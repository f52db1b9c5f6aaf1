package sqlsrv

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/flight/flightsql"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Bounds on prepared statements. A tool that never closes its statements (JDBC tools leak
// them) costs at most MaxPrepared small entries: the least recently used one is evicted.
const (
	MaxPrepared  = 256
	PreparedIdle = 15 * time.Minute
)

// ErrUnknownHandle answers a prepared statement handle this server does not hold.
var ErrUnknownHandle = errors.New("unknown prepared statement handle: never created by this node, closed, evicted (more than 256 open) or idle for over 15 minutes; prepare the statement again")

// preparedStmt is what a handle stands for: the statement text, never its result. Bound
// parameters are the analyst's own values and live only here, in memory, until the
// statement is closed, rebound or expires.
type preparedStmt struct {
	query   string
	nparams int
	dataset *arrow.Schema // nil when DuckDB cannot say it before running
	args    []any         // bound by the last DoPut, nil before
	used    time.Time
}

// preparedSet holds one server's open prepared statements by their random handle. The
// service has one token for all its analysts and tells no sessions apart: a handle is
// usable by whoever holds the token and the handle, which is 128 random bits.
type preparedSet struct {
	mu   sync.Mutex
	byID map[string]*preparedStmt
	max  int
	idle time.Duration
	now  func() time.Time
}

func newPreparedSet() *preparedSet {
	return &preparedSet{byID: map[string]*preparedStmt{}, max: MaxPrepared, idle: PreparedIdle, now: time.Now}
}

// add stores p under a new handle, first dropping expired statements and, when full, the
// least recently used one.
func (ps *preparedSet) add(p *preparedStmt) ([]byte, error) {
	handle := make([]byte, 16)
	if _, err := rand.Read(handle); err != nil {
		return nil, fmt.Errorf("prepared statement handle: %w", err)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	now := ps.now()
	var oldest string
	for id, q := range ps.byID {
		if now.Sub(q.used) > ps.idle {
			delete(ps.byID, id)
			continue
		}
		if oldest == "" || q.used.Before(ps.byID[oldest].used) {
			oldest = id
		}
	}
	if len(ps.byID) >= ps.max {
		delete(ps.byID, oldest)
	}
	p.used = now
	ps.byID[string(handle)] = p
	return handle, nil
}

// get returns a copy of the statement behind handle and marks it used.
func (ps *preparedSet) get(handle []byte) (preparedStmt, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p, ok := ps.byID[string(handle)]
	now := ps.now()
	if ok && now.Sub(p.used) > ps.idle {
		delete(ps.byID, string(handle))
		ok = false
	}
	if !ok {
		return preparedStmt{}, status.Error(codes.InvalidArgument, ErrUnknownHandle.Error())
	}
	p.used = now
	return *p, nil
}

// bind replaces the parameters bound to handle.
func (ps *preparedSet) bind(handle []byte, args []any) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p, ok := ps.byID[string(handle)]
	if !ok {
		return status.Error(codes.InvalidArgument, ErrUnknownHandle.Error())
	}
	p.args, p.used = args, ps.now()
	return nil
}

func (ps *preparedSet) remove(handle []byte) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if _, ok := ps.byID[string(handle)]; !ok {
		return status.Error(codes.InvalidArgument, ErrUnknownHandle.Error())
	}
	delete(ps.byID, string(handle))
	return nil
}

// CreatePreparedStatement checks the statement is one DuckDB statement, counts its
// parameters and, where DuckDB can say it without running it, its result schema. A
// statement that writes is refused when it runs, by the read-only transaction, exactly as a
// statement sent directly is.
func (s *Server) CreatePreparedStatement(ctx context.Context, req flightsql.ActionCreatePreparedStatementRequest) (flightsql.ActionCreatePreparedStatementResult, error) {
	var res flightsql.ActionCreatePreparedStatementResult
	q := req.GetQuery()
	if len(req.GetTransactionId()) > 0 {
		return res, status.Error(codes.InvalidArgument, "this service has no transactions: every statement runs in its own read-only one")
	}
	n, err := s.countParams(ctx, q)
	if err != nil {
		s.record(ctx, q, 0, -1, err)
		return res, err
	}
	p := &preparedStmt{query: q, nparams: n, dataset: s.resultSchema(ctx, q, n)}
	if res.Handle, err = s.prepared.add(p); err != nil {
		return res, status.Error(codes.Internal, "prepared statement handle")
	}
	res.DatasetSchema = p.dataset
	res.ParameterSchema = parameterSchema(n)
	return res, nil
}

// countParams prepares q once to check it is a single statement DuckDB understands and to
// count its placeholders ("?", "$1", "$name").
func (s *Server) countParams(ctx context.Context, q string) (int, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, status.Error(codes.Unavailable, "store unavailable")
	}
	defer conn.Close()
	var n int
	err = conn.Raw(func(dc any) error {
		// duckdb_prepare accepts exactly one statement.
		st, err := dc.(driver.Conn).Prepare(q)
		if err != nil {
			return err
		}
		n = st.NumInput()
		return st.Close()
	})
	if err != nil {
		return 0, status.Error(codes.InvalidArgument, firstLine(err))
	}
	return n, nil
}

// resultSchema runs q read-only as a subquery with no rows and every parameter NULL, for the
// schema of its result; nil where DuckDB cannot put q in a subquery (PRAGMA, a write).
func (s *Server) resultSchema(ctx context.Context, q string, nparams int) *arrow.Schema {
	body := strings.TrimRight(strings.TrimSpace(q), "; \t\r\n")
	// Newlines: a trailing "-- comment" in q must not swallow the closing parenthesis.
	rd, err := s.query(ctx, "SELECT * FROM (\n"+body+"\n) LIMIT 0", make([]any, nparams)...)
	if err != nil {
		return nil
	}
	defer rd.Release()
	return rd.Schema()
}

// parameterSchema describes n parameters. DuckDB does not tell the types it expects through
// this driver, so they are declared as nullable text, which every client can send; values of
// the other scalar types are taken as well (see paramValue).
func parameterSchema(n int) *arrow.Schema {
	fields := make([]arrow.Field, n)
	for i := range fields {
		fields[i] = arrow.Field{Name: "$" + strconv.Itoa(i+1), Type: arrow.BinaryTypes.String, Nullable: true}
	}
	return arrow.NewSchema(fields, nil)
}

// ClosePreparedStatement forgets the statement and its bound parameters.
func (s *Server) ClosePreparedStatement(_ context.Context, req flightsql.ActionClosePreparedStatementRequest) error {
	return s.prepared.remove(req.GetPreparedStatementHandle())
}

// DoPutPreparedStatementQuery binds one row of parameters, one column per placeholder in
// order, to the statement. Refusals are audited like a refused statement; values never are.
func (s *Server) DoPutPreparedStatementQuery(ctx context.Context, cmd flightsql.PreparedStatementQuery, rdr flight.MessageReader, _ flight.MetadataWriter) ([]byte, error) {
	handle := cmd.GetPreparedStatementHandle()
	p, err := s.prepared.get(handle)
	if err != nil {
		return nil, err
	}
	args, err := readParams(rdr, p.nparams)
	if err != nil {
		s.record(ctx, p.query, p.nparams, -1, err)
		return nil, err
	}
	if err := s.prepared.bind(handle, args); err != nil {
		return nil, err
	}
	return handle, nil
}

// readParams takes the parameter values from a bound record stream: no rows clears the
// binding, one row binds it; one execution runs with one set of parameters.
func readParams(rdr flight.MessageReader, nparams int) ([]any, error) {
	var args []any
	var rows int64
	for rdr.Next() {
		rec := rdr.Record()
		if rows += rec.NumRows(); rows > 1 {
			return nil, status.Error(codes.InvalidArgument, "bind one row of parameters per execution")
		}
		if rec.NumRows() == 0 {
			continue
		}
		if int(rec.NumCols()) != nparams {
			return nil, status.Errorf(codes.InvalidArgument, "the statement has %d parameters, the bound record %d columns", nparams, rec.NumCols())
		}
		args = make([]any, nparams)
		for i, col := range rec.Columns() {
			v, err := paramValue(col, 0)
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "parameter %d: %v", i+1, err)
			}
			args[i] = v
		}
	}
	if err := rdr.Err(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "read bound parameters: %v", err)
	}
	return args, nil
}

// paramValue is row i of col as a value DuckDB binds. Strings and bytes are copied: the
// record's buffers are gone once the stream moves on.
func paramValue(col arrow.Array, i int) (any, error) {
	if col.IsNull(i) {
		return nil, nil
	}
	switch c := col.(type) {
	case *array.Boolean:
		return c.Value(i), nil
	case *array.Int8:
		return c.Value(i), nil
	case *array.Int16:
		return c.Value(i), nil
	case *array.Int32:
		return c.Value(i), nil
	case *array.Int64:
		return c.Value(i), nil
	case *array.Uint8:
		return c.Value(i), nil
	case *array.Uint16:
		return c.Value(i), nil
	case *array.Uint32:
		return c.Value(i), nil
	case *array.Uint64:
		return c.Value(i), nil
	case *array.Float32:
		return c.Value(i), nil
	case *array.Float64:
		return c.Value(i), nil
	case *array.String:
		return strings.Clone(c.Value(i)), nil
	case *array.LargeString:
		return strings.Clone(c.Value(i)), nil
	case *array.Binary:
		return bytes.Clone(c.Value(i)), nil
	case *array.LargeBinary:
		return bytes.Clone(c.Value(i)), nil
	case *array.Date32:
		return c.Value(i).ToTime(), nil
	case *array.Date64:
		return c.Value(i).ToTime(), nil
	case *array.Timestamp:
		return c.Value(i).ToTime(c.DataType().(*arrow.TimestampType).Unit), nil
	}
	return nil, fmt.Errorf("the Arrow type %s is not supported; bind a boolean, integer, float, string, binary, date or timestamp", col.DataType())
}

// GetFlightInfoPreparedStatement hands back a ticket that names the statement; it runs, with
// the parameters bound at that moment, when the ticket is redeemed.
func (s *Server) GetFlightInfoPreparedStatement(ctx context.Context, cmd flightsql.PreparedStatementQuery, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	p, err := s.prepared.get(cmd.GetPreparedStatementHandle())
	if err != nil {
		return nil, err
	}
	if err := p.ready(); err != nil {
		s.record(ctx, p.query, p.nparams, -1, err)
		return nil, err
	}
	return &flight.FlightInfo{FlightDescriptor: desc, Endpoint: []*flight.FlightEndpoint{{Ticket: &flight.Ticket{Ticket: desc.Cmd}}}, TotalRecords: -1, TotalBytes: -1}, nil
}

// ready says whether the statement has the parameters it needs.
func (p preparedStmt) ready() error {
	if p.nparams > 0 && p.args == nil {
		return status.Errorf(codes.InvalidArgument, "the statement has %d parameters and none are bound", p.nparams)
	}
	return nil
}

// GetSchemaPreparedStatement answers the result schema found at creation.
func (s *Server) GetSchemaPreparedStatement(_ context.Context, cmd flightsql.PreparedStatementQuery, _ *flight.FlightDescriptor) (*flight.SchemaResult, error) {
	p, err := s.prepared.get(cmd.GetPreparedStatementHandle())
	if err != nil {
		return nil, err
	}
	if p.dataset == nil {
		return nil, status.Error(codes.FailedPrecondition, "DuckDB gives this statement's result schema only when it runs")
	}
	return &flight.SchemaResult{Schema: flight.SerializeSchema(p.dataset, s.mem)}, nil
}

// DoGetPreparedStatement runs the statement with its bound parameters exactly as
// DoGetStatement runs a statement: read-only, limited to one statement, audited.
func (s *Server) DoGetPreparedStatement(ctx context.Context, cmd flightsql.PreparedStatementQuery) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	p, err := s.prepared.get(cmd.GetPreparedStatementHandle())
	if err != nil {
		return nil, nil, err
	}
	if err := p.ready(); err != nil {
		s.record(ctx, p.query, p.nparams, -1, err)
		return nil, nil, err
	}
	return s.run(ctx, p.query, p.nparams, p.args)
}

// DoPutPreparedStatementUpdate refuses every write, as DoPutCommandStatementUpdate does.
func (s *Server) DoPutPreparedStatementUpdate(ctx context.Context, cmd flightsql.PreparedStatementUpdate, _ flight.MessageReader) (int64, error) {
	p, err := s.prepared.get(cmd.GetPreparedStatementHandle())
	if err != nil {
		return 0, err
	}
	refused := status.Error(codes.PermissionDenied, ErrReadOnly.Error())
	s.record(ctx, p.query, p.nparams, -1, refused)
	return 0, refused
}
