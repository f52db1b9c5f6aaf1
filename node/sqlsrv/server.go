package sqlsrv

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/flight/flightsql"
	"github.com/apache/arrow/go/v17/arrow/flight/flightsql/schema_ref"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/marcboeker/go-duckdb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/samsyn/samsyn/queries/audit"
)

// Auditor records each statement.
type Auditor interface {
	Append(ctx context.Context, e audit.Entry) (audit.Entry, error)
}

// Server answers Flight SQL on one DuckDB store.
type Server struct {
	flightsql.BaseServer
	db       *sql.DB
	audit    Auditor
	logger   *slog.Logger
	mem      memory.Allocator
	prepared *preparedSet

	statements *prometheus.CounterVec // nil until Instrument
	rowsOut    prometheus.Counter
}

var _ flightsql.Server = (*Server)(nil)

// Instrument counts the service's statements on reg: samsyn_node_sql_statements_total by kind
// (statement, prepared) and outcome (ok, refused), and samsyn_node_sql_rows_total.
func (s *Server) Instrument(reg prometheus.Registerer) {
	f := promauto.With(reg)
	s.statements = f.NewCounterVec(prometheus.CounterOpts{Name: "samsyn_node_sql_statements_total", Help: "Statements run by the analysts' SQL service, by kind (statement, prepared) and outcome (ok, refused)."}, []string{"kind", "outcome"})
	s.rowsOut = f.NewCounter(prometheus.CounterOpts{Name: "samsyn_node_sql_rows_total", Help: "Rows the analysts' SQL service returned."})
}

// New returns the service over db.
func New(db *sql.DB, a Auditor, logger *slog.Logger) (*Server, error) {
	// Analysts read the store's tables, never files: DuckDB cannot undo this while open.
	if _, err := db.Exec("SET enable_external_access = false"); err != nil {
		return nil, fmt.Errorf("lock file access: %w", err)
	}
	s := &Server{db: db, audit: a, logger: logger.With("component", "sql"), mem: memory.DefaultAllocator, prepared: newPreparedSet()}
	s.Alloc = s.mem
	for id, v := range map[flightsql.SqlInfo]any{
		flightsql.SqlInfoFlightSqlServerName:         "Samsyn node (DuckDB)",
		flightsql.SqlInfoFlightSqlServerVersion:      "1",
		flightsql.SqlInfoFlightSqlServerArrowVersion: "17",
		flightsql.SqlInfoFlightSqlServerReadOnly:     true,
		flightsql.SqlInfoFlightSqlServerSql:          true,
		flightsql.SqlInfoFlightSqlServerSubstrait:    false,
		flightsql.SqlInfoFlightSqlServerTransaction:  int32(0),
		flightsql.SqlInfoFlightSqlServerCancel:       false,
		flightsql.SqlInfoDDLCatalog:                  false,
		flightsql.SqlInfoDDLSchema:                   false,
		flightsql.SqlInfoDDLTable:                    false,
		flightsql.SqlInfoIdentifierCase:              int32(1), // case insensitive
		flightsql.SqlInfoQuotedIdentifierCase:        int32(2),
	} {
		if err := s.RegisterSqlInfo(id, v); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Listen opens a local-only listener: a loopback TCP address or unix:/path.
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return net.Listen("unix", path)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("sql listen %q: expected 127.0.0.1:PORT or unix:/path", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("sql listen %q: the analysts' SQL service listens on loopback or a Unix socket only", addr)
	}
	return net.Listen("tcp", addr)
}

// TokenInterceptors admit only calls with "authorization: Bearer <token>".
func TokenInterceptors(token string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	want := sha256.Sum256([]byte(token))
	check := func(ctx context.Context) error {
		md, _ := metadata.FromIncomingContext(ctx)
		for _, v := range md.Get("authorization") {
			if t, ok := strings.CutPrefix(v, "Bearer "); ok {
				got := sha256.Sum256([]byte(t))
				if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
					return nil
				}
			}
		}
		return status.Error(codes.Unauthenticated, "a valid bearer token is required (see the node's sql token file)")
	}
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}, func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}
}

// NewGRPCServer is a gRPC server with the token check and the Flight SQL service; imp, if
// set, takes imports while the node serves (ActionImport), and prev, if set, runs previews
// (ActionPreview).
func NewGRPCServer(s *Server, token string, imp Importer, prev Previewer) *grpc.Server {
	u, st := TokenInterceptors(token)
	g := grpc.NewServer(grpc.UnaryInterceptor(u), grpc.StreamInterceptor(st))
	flight.RegisterFlightServiceServer(g, withImport{FlightServer: flightsql.NewFlightServer(s), imp: imp, prev: prev})
	return g
}

func statementHash(q string) string {
	sum := sha256.Sum256([]byte(q))
	return hex.EncodeToString(sum[:8])
}

// GetFlightInfoStatement hands back a ticket that carries the statement.
func (s *Server) GetFlightInfoStatement(_ context.Context, cmd flightsql.StatementQuery, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	tkt, err := flightsql.CreateStatementQueryTicket([]byte(cmd.GetQuery()))
	if err != nil {
		return nil, err
	}
	return &flight.FlightInfo{FlightDescriptor: desc, Endpoint: []*flight.FlightEndpoint{{Ticket: &flight.Ticket{Ticket: tkt}}}, TotalRecords: -1, TotalBytes: -1}, nil
}

// ErrReadOnly is the answer to anything that would write.
var ErrReadOnly = errors.New("this service is read-only")

// DoGetStatement runs one statement in a read-only transaction and streams the result.
func (s *Server) DoGetStatement(ctx context.Context, cmd flightsql.StatementQueryTicket) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	return s.run(ctx, string(cmd.GetStatementHandle()), plainStatement, nil)
}

// plainStatement is the parameter count run and record take for a statement that was not
// prepared: it has no parameters and its audit entry has no "parameters" field.
const plainStatement = -1

// run executes q with args read-only, streams the result and audits the execution: its
// hash, the number of parameters bound (never their values) and the rows sent, or the
// refusal.
func (s *Server) run(ctx context.Context, q string, params int, args []any) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	rd, err := s.query(ctx, q, args...)
	if err != nil {
		s.record(ctx, q, params, -1, err)
		return nil, nil, err
	}
	ch := make(chan flight.StreamChunk)
	go func() {
		defer close(ch)
		defer rd.Release()
		var n int64
		defer func() { s.record(context.WithoutCancel(ctx), q, params, n, nil) }()
		for rd.Next() {
			rec := rd.Record()
			rec.Retain()
			select {
			case ch <- flight.StreamChunk{Data: rec}:
				n += rec.NumRows()
			case <-ctx.Done():
				rec.Release()
				return
			}
		}
	}()
	return rd.Schema(), ch, nil
}

// query checks q is one statement, then runs it with args bound read-only through Arrow.
func (s *Server) query(ctx context.Context, q string, args ...any) (array.RecordReader, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "store unavailable")
	}
	defer conn.Close()
	// duckdb_prepare accepts exactly one statement: "COMMIT; INSERT ..." never gets through.
	st, err := conn.PrepareContext(ctx, q)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, firstLine(err))
	}
	st.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN TRANSACTION READ ONLY"); err != nil {
		return nil, status.Error(codes.Internal, firstLine(err))
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	var rd array.RecordReader
	err = conn.Raw(func(dc any) error {
		ar, err := duckdb.NewArrowFromConn(dc.(driver.Conn))
		if err != nil {
			return err
		}
		rd, err = ar.QueryContext(ctx, q, args...)
		return err
	})
	if err != nil {
		msg := firstLine(err)
		if strings.Contains(msg, "read-only") {
			return nil, status.Error(codes.PermissionDenied, ErrReadOnly.Error()+": "+msg)
		}
		return nil, status.Error(codes.InvalidArgument, msg)
	}
	return rd, nil
}

func firstLine(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return strings.TrimPrefix(msg, "duckdb_execute_prepared_arrow: ")
}

// record audits a statement locally: who, its hash, for a prepared statement how many
// parameters were bound (params; plainStatement for none), rows returned or the refusal.
func (s *Server) record(ctx context.Context, q string, params int, rows int64, err error) {
	fields := map[string]string{"statement_sha256": statementHash(q)}
	if params != plainStatement {
		fields["parameters"] = strconv.Itoa(params)
	}
	action := "sql.query"
	if err != nil {
		action, fields["error"] = "sql.refuse", auditReason(err)
	} else {
		fields["rows"] = strconv.FormatInt(rows, 10)
	}
	if s.statements != nil {
		kind := "statement"
		if params != plainStatement {
			kind = "prepared"
		}
		if err != nil {
			s.statements.WithLabelValues(kind, "refused").Inc()
		} else {
			s.statements.WithLabelValues(kind, "ok").Inc()
			s.rowsOut.Add(float64(rows))
		}
	}
	if s.audit == nil {
		return
	}
	if _, aerr := s.audit.Append(ctx, audit.Entry{Actor: "local:analyst", Action: action, Fields: fields}); aerr != nil {
		s.logger.Error("audit append failed", "err", aerr)
	}
}

// duckdbClass matches DuckDB's error class ("Conversion Error: ...") and everything after it.
var duckdbClass = regexp.MustCompile(`\b([A-Z][A-Za-z]* Error): .*`)

// auditReason is the refusal as the audit log keeps it. DuckDB's text after its error class
// can quote a literal of the statement, a bound parameter or a cell ("Could not convert
// string '...'"), and the log keeps statements by hash only: it keeps the class.
func auditReason(err error) string {
	return duckdbClass.ReplaceAllString(status.Convert(err).Message(), "$1")
}

// DoPutCommandStatementUpdate refuses every write.
func (s *Server) DoPutCommandStatementUpdate(ctx context.Context, cmd flightsql.StatementUpdate) (int64, error) {
	s.record(ctx, cmd.GetQuery(), plainStatement, -1, status.Error(codes.PermissionDenied, ErrReadOnly.Error()))
	return 0, status.Error(codes.PermissionDenied, ErrReadOnly.Error())
}

func info(desc *flight.FlightDescriptor, sc *arrow.Schema) *flight.FlightInfo {
	return &flight.FlightInfo{FlightDescriptor: desc, Schema: flight.SerializeSchema(sc, memory.DefaultAllocator),
		Endpoint: []*flight.FlightEndpoint{{Ticket: &flight.Ticket{Ticket: desc.Cmd}}}, TotalRecords: -1, TotalBytes: -1}
}

func one(rec arrow.Record) <-chan flight.StreamChunk {
	ch := make(chan flight.StreamChunk, 1)
	ch <- flight.StreamChunk{Data: rec}
	close(ch)
	return ch
}

// GetFlightInfoCatalogs and DoGetCatalogs list the one catalog.
func (s *Server) GetFlightInfoCatalogs(_ context.Context, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	return info(desc, schema_ref.Catalogs), nil
}

func (s *Server) DoGetCatalogs(ctx context.Context) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	vals, err := s.strings(ctx, "SELECT DISTINCT table_catalog FROM information_schema.tables WHERE table_catalog NOT IN ('system', 'temp') ORDER BY 1")
	if err != nil {
		return nil, nil, err
	}
	b := array.NewRecordBuilder(s.mem, schema_ref.Catalogs)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).AppendValues(vals, nil)
	return schema_ref.Catalogs, one(b.NewRecord()), nil
}

// GetFlightInfoSchemas and DoGetDBSchemas list schemas.
func (s *Server) GetFlightInfoSchemas(_ context.Context, _ flightsql.GetDBSchemas, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	return info(desc, schema_ref.DBSchemas), nil
}

func (s *Server) DoGetDBSchemas(ctx context.Context, cmd flightsql.GetDBSchemas) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT table_catalog, table_schema FROM information_schema.tables
WHERE table_catalog NOT IN ('system', 'temp') AND (? IS NULL OR table_schema LIKE ?) ORDER BY 1, 2`, cmd.GetDBSchemaFilterPattern(), cmd.GetDBSchemaFilterPattern())
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	b := array.NewRecordBuilder(s.mem, schema_ref.DBSchemas)
	defer b.Release()
	for rows.Next() {
		var cat, sch string
		if err := rows.Scan(&cat, &sch); err != nil {
			return nil, nil, err
		}
		b.Field(0).(*array.StringBuilder).Append(cat)
		b.Field(1).(*array.StringBuilder).Append(sch)
	}
	return schema_ref.DBSchemas, one(b.NewRecord()), rows.Err()
}

// GetFlightInfoTables and DoGetTables list tables, with their Arrow schemas on request.
func (s *Server) GetFlightInfoTables(_ context.Context, cmd flightsql.GetTables, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	if cmd.GetIncludeSchema() {
		return info(desc, schema_ref.TablesWithIncludedSchema), nil
	}
	return info(desc, schema_ref.Tables), nil
}

func (s *Server) DoGetTables(ctx context.Context, cmd flightsql.GetTables) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT table_catalog, table_schema, table_name, CASE table_type WHEN 'BASE TABLE' THEN 'TABLE' ELSE table_type END
FROM information_schema.tables WHERE table_catalog NOT IN ('system', 'temp')
  AND (? IS NULL OR table_schema LIKE ?) AND (? IS NULL OR table_name LIKE ?) ORDER BY 1, 2, 3`,
		cmd.GetDBSchemaFilterPattern(), cmd.GetDBSchemaFilterPattern(), cmd.GetTableNameFilterPattern(), cmd.GetTableNameFilterPattern())
	if err != nil {
		return nil, nil, err
	}
	type tbl struct{ cat, sch, name, typ string }
	var list []tbl
	for rows.Next() {
		var t tbl
		if err := rows.Scan(&t.cat, &t.sch, &t.name, &t.typ); err != nil {
			rows.Close()
			return nil, nil, err
		}
		if len(cmd.GetTableTypes()) > 0 && !contains(cmd.GetTableTypes(), t.typ) {
			continue
		}
		list = append(list, t)
	}
	rows.Close()
	sc := schema_ref.Tables
	if cmd.GetIncludeSchema() {
		sc = schema_ref.TablesWithIncludedSchema
	}
	b := array.NewRecordBuilder(s.mem, sc)
	defer b.Release()
	for _, t := range list {
		b.Field(0).(*array.StringBuilder).Append(t.cat)
		b.Field(1).(*array.StringBuilder).Append(t.sch)
		b.Field(2).(*array.StringBuilder).Append(t.name)
		b.Field(3).(*array.StringBuilder).Append(t.typ)
		if cmd.GetIncludeSchema() {
			rd, err := s.query(ctx, fmt.Sprintf(`SELECT * FROM "%s"."%s" LIMIT 0`, strings.ReplaceAll(t.sch, `"`, `""`), strings.ReplaceAll(t.name, `"`, `""`)))
			if err != nil {
				return nil, nil, err
			}
			b.Field(4).(*array.BinaryBuilder).Append(flight.SerializeSchema(rd.Schema(), s.mem))
			rd.Release()
		}
	}
	return sc, one(b.NewRecord()), nil
}

// GetFlightInfoTableTypes and DoGetTableTypes list table types.
func (s *Server) GetFlightInfoTableTypes(_ context.Context, desc *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	return info(desc, schema_ref.TableTypes), nil
}

func (s *Server) DoGetTableTypes(context.Context) (*arrow.Schema, <-chan flight.StreamChunk, error) {
	b := array.NewRecordBuilder(s.mem, schema_ref.TableTypes)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).AppendValues([]string{"TABLE", "VIEW"}, nil)
	return schema_ref.TableTypes, one(b.NewRecord()), nil
}

func (s *Server) strings(ctx context.Context, q string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
