package sqlsrv

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/flight/flightsql"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/samsyn/samsyn/node/nodetest"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries/audit"
)

const token = "analyst-token-for-tests"

// node is a serving SQL service on a seeded store, with what a test needs to check it from
// outside: the store's own database for oracle queries and the audit log's path.
type node struct {
	srv       *Server
	client    *flightsql.Client
	db        *sql.DB
	auditPath string
}

func start(t *testing.T) (*flightsql.Client, string) {
	n := serve(t)
	return n.client, n.auditPath
}

func serve(t *testing.T) node {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(context.Background(), filepath.Join(dir, "store.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	nodetest.Seed(t, st.DB(), "hbs", 3000)
	log, err := audit.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	srv, err := New(st.DB(), log, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("0.0.0.0:0"); err == nil {
		t.Fatal("the SQL service listened off loopback")
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGRPCServer(srv, token, nil, nil)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	c, err := flightsql.NewClient(ln.Addr().String(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return node{srv: srv, client: c, db: st.DB(), auditPath: filepath.Join(dir, "audit.log")}
}

func authed(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// rows runs a query and counts the rows streamed back.
func rows(t *testing.T, c *flightsql.Client, q string) (int64, error) {
	t.Helper()
	ctx := authed(t)
	info, err := c.Execute(ctx, q)
	if err != nil {
		return 0, err
	}
	rd, err := c.DoGet(ctx, info.Endpoint[0].Ticket)
	if err != nil {
		return 0, err
	}
	defer rd.Release()
	var n int64
	for rd.Next() {
		n += rd.Record().NumRows()
	}
	return n, rd.Err()
}

func TestFlightSQLForAnalysts(t *testing.T) {
	c, auditPath := start(t)

	if _, err := c.GetTables(context.Background(), &flightsql.GetTablesOpts{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	ctx := authed(t)
	info, err := c.GetTables(ctx, &flightsql.GetTablesOpts{IncludeSchema: true})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := c.DoGet(ctx, info.Endpoint[0].Ticket)
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string]int{}
	for rd.Next() {
		rec := rd.Record()
		names := rec.Column(2)
		schemas := rec.Column(4)
		for i := 0; i < int(rec.NumRows()); i++ {
			sc, err := flight.DeserializeSchema(schemas.(interface{ Value(int) []byte }).Value(i), nil)
			if err != nil {
				t.Fatal(err)
			}
			tables[names.ValueStr(i)] = sc.NumFields()
		}
	}
	rd.Release()
	if tables["participant"] != 12 || tables["episode"] != 8 {
		t.Fatalf("tables: %v", tables)
	}

	n, err := rows(t, c, "SELECT * FROM participant")
	if err != nil || n != 3000 {
		t.Fatalf("participant rows %d: %v", n, err)
	}
	n, err = rows(t, c, "SELECT * FROM range(300000)")
	if err != nil || n != 300000 {
		t.Fatalf("large result %d: %v", n, err)
	}
	for _, q := range []string{"INSERT INTO participant SELECT * FROM participant LIMIT 1", "DELETE FROM participant", "COMMIT; DELETE FROM participant", "CREATE TABLE x AS SELECT 1"} {
		if _, err := rows(t, c, q); err == nil {
			t.Fatalf("a write was accepted: %s", q)
		}
	}
	if _, err := c.ExecuteUpdate(ctx, "DELETE FROM participant"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("update: %v", err)
	}
	if n, _ := rows(t, c, "SELECT count(*) FROM participant"); n != 1 {
		t.Fatal("count query")
	}
	if _, err := rows(t, c, "SELECT * FROM read_csv('/etc/hostname')"); err == nil {
		t.Fatal("a statement read a file")
	}
	// DuckDB quotes the literal it cannot convert; the audit keeps statements by hash only.
	if _, err := rows(t, c, "SELECT CAST('zz-literal-4411' AS INTEGER)"); !strings.Contains(fmt.Sprint(err), "zz-literal-4411") {
		t.Fatalf("expected DuckDB to quote the literal to the analyst: %v", err)
	}
	raw, err := io.ReadAll(mustOpen(t, auditPath))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"action":"sql.query"`) || !strings.Contains(string(raw), `"rows":"3000"`) || !strings.Contains(string(raw), `"action":"sql.refuse"`) {
		t.Fatalf("audit:\n%s", raw)
	}
	if strings.Contains(string(raw), "DELETE FROM") || strings.Contains(string(raw), "zz-literal-4411") {
		t.Fatal("statements are audited by hash, not text")
	}
}

// row is one row of bound parameters: string, int64, float64, bool, arrow.Date32, or an
// arrow.Array taken as it is (for a type the service must refuse).
func row(t *testing.T, mem memory.Allocator, vals ...any) arrow.Record {
	t.Helper()
	fields := make([]arrow.Field, len(vals))
	cols := make([]arrow.Array, len(vals))
	for i, v := range vals {
		var b array.Builder
		switch v := v.(type) {
		case string:
			sb := array.NewStringBuilder(mem)
			sb.Append(v)
			b = sb
		case int64:
			ib := array.NewInt64Builder(mem)
			ib.Append(v)
			b = ib
		case float64:
			fb := array.NewFloat64Builder(mem)
			fb.Append(v)
			b = fb
		case bool:
			bb := array.NewBooleanBuilder(mem)
			bb.Append(v)
			b = bb
		case arrow.Date32:
			db := array.NewDate32Builder(mem)
			db.Append(v)
			b = db
		case arrow.Array:
			v.Retain()
			cols[i] = v
		default:
			t.Fatalf("row: no builder for %T", v)
		}
		if b != nil {
			cols[i] = b.NewArray()
			b.Release()
		}
		fields[i] = arrow.Field{Name: fmt.Sprintf("p%d", i+1), Type: cols[i].DataType(), Nullable: true}
	}
	rec := array.NewRecord(arrow.NewSchema(fields, nil), cols, 1)
	for _, c := range cols {
		c.Release()
	}
	return rec
}

// executePrepared binds args (if any), executes and reads every row as text, with the schema
// the stream came with.
func executePrepared(t *testing.T, client *flightsql.Client, mem memory.Allocator, p *flightsql.PreparedStatement, args ...any) ([][]string, *arrow.Schema, error) {
	t.Helper()
	ctx := authed(t)
	if len(args) > 0 {
		rec := row(t, mem, args...)
		defer rec.Release()
		p.SetParameters(rec)
	}
	info, err := p.Execute(ctx)
	if err != nil {
		return nil, nil, err
	}
	rd, err := client.DoGet(ctx, info.Endpoint[0].Ticket)
	if err != nil {
		return nil, nil, err
	}
	defer rd.Release()
	var out [][]string
	for rd.Next() {
		rec := rd.Record()
		for i := 0; i < int(rec.NumRows()); i++ {
			var r []string
			for _, col := range rec.Columns() {
				r = append(r, col.ValueStr(i))
			}
			out = append(out, r)
		}
	}
	return out, rd.Schema(), rd.Err()
}

// oracle runs q on the store directly through database/sql, every column scanned as text.
func oracle(t *testing.T, db *sql.DB, q string, args ...any) [][]string {
	t.Helper()
	rs, err := db.Query(q, args...)
	if err != nil {
		t.Fatalf("oracle %s: %v", q, err)
	}
	defer rs.Close()
	cols, _ := rs.Columns()
	var out [][]string
	for rs.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		r := make([]string, len(vals))
		for i, v := range vals {
			r[i] = fmt.Sprint(v)
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// audited returns the audit entries of statement q, found by its hash computed here.
func audited(t *testing.T, path, q string) []audit.Entry {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(q))
	want := hex.EncodeToString(sum[:8])
	var out []audit.Entry
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e audit.Entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if e.Fields["statement_sha256"] == want {
			out = append(out, e)
		}
	}
	return out
}

// wantCode fails t unless err is a gRPC error with code.
func wantCode(t *testing.T, err error, code codes.Code, what string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: want %s, got %v", what, code, err)
	}
}

func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func TestPreparedStatements(t *testing.T) {
	n := serve(t)
	c := n.client
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)

	_, err := c.Prepare(context.Background(), "SELECT 1")
	wantCode(t, err, codes.Unauthenticated, "prepare without a token")

	t.Run("bound parameters give the rows DuckDB gives, rebinding included", func(t *testing.T) {
		q := "SELECT participant_key, birth_year FROM participant WHERE gender = ? AND birth_year >= ? ORDER BY participant_key"
		p, err := c.Prepare(authed(t), q)
		must(t, err, "prepare")
		defer p.Close(authed(t))
		if p.DatasetSchema() == nil || fmt.Sprint(fieldNames(p.DatasetSchema())) != "[participant_key birth_year]" {
			t.Fatalf("dataset schema: %v", p.DatasetSchema())
		}
		if p.ParameterSchema().NumFields() != 2 {
			t.Fatalf("parameter schema: %v", p.ParameterSchema())
		}
		for _, args := range [][]any{{"K", int64(1980)}, {"M", int64(1990)}} {
			got, sc, err := executePrepared(t, c, mem, p, args...)
			must(t, err, fmt.Sprint(args))
			want := oracle(t, n.db, q, args...)
			if len(want) == 0 || len(want) >= 3000 {
				t.Fatalf("args %v select %d rows: the test needs some rows, not all", args, len(want))
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("args %v: %d rows through Flight SQL, %d in the store", args, len(got), len(want))
			}
			if !sc.Equal(p.DatasetSchema()) {
				t.Fatalf("stream schema %v, announced %v", sc, p.DatasetSchema())
			}
		}
	})

	t.Run("a date as a date, as text cast in the SQL, with $n, ? and $name placeholders", func(t *testing.T) {
		want := oracle(t, n.db, "SELECT count(*) FROM episode WHERE start_date >= DATE '2021-01-01' AND method = 'SE'")
		if want[0][0] == "0" {
			t.Fatal("fixture: no SE episode from 2021")
		}
		for _, tc := range []struct {
			q    string
			args []any
		}{
			{"SELECT count(*) FROM episode WHERE start_date >= $1 AND method = $2", []any{arrow.Date32FromTime(time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)), "SE"}},
			{"SELECT count(*) FROM episode WHERE start_date >= CAST(? AS DATE) AND method = ?", []any{"2021-01-01", "SE"}},
			{"SELECT count(*) FROM episode WHERE start_date >= $since::DATE AND method = $method", []any{"2021-01-01", "SE"}},
		} {
			p, err := c.Prepare(authed(t), tc.q)
			must(t, err, "prepare "+tc.q)
			got, _, err := executePrepared(t, c, mem, p, tc.args...)
			must(t, err, tc.q)
			must(t, p.Close(authed(t)), "close")
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s: got %v, the store says %v", tc.q, got, want)
			}
		}
	})

	t.Run("bad parameters are refused and their values never audited", func(t *testing.T) {
		q := "SELECT count(*) FROM participant WHERE birth_year > ?"
		p, err := c.Prepare(authed(t), q)
		must(t, err, "prepare")
		defer p.Close(authed(t))

		_, _, err = executePrepared(t, c, mem, p)
		wantCode(t, err, codes.InvalidArgument, "executed with no parameters bound")

		lb := array.NewListBuilder(mem, arrow.PrimitiveTypes.Int64)
		lb.Append(true)
		lb.ValueBuilder().(*array.Int64Builder).Append(1990)
		list := lb.NewArray()
		lb.Release()
		_, _, err = executePrepared(t, c, mem, p, list)
		list.Release()
		wantCode(t, err, codes.InvalidArgument, "a list parameter")
		if !strings.Contains(status.Convert(err).Message(), "parameter 1") {
			t.Fatalf("the refusal does not name the parameter: %v", err)
		}

		_, _, err = executePrepared(t, c, mem, p, int64(1990), int64(1991))
		wantCode(t, err, codes.InvalidArgument, "two values for one parameter")

		_, _, err = executePrepared(t, c, mem, p, "1990")
		wantCode(t, err, codes.InvalidArgument, "text compared with a year")

		entries := audited(t, n.auditPath, q)
		if len(entries) != 4 {
			t.Fatalf("4 refusals, %d audit entries: %v", len(entries), entries)
		}

		// DuckDB quotes a value it cannot convert: the analyst sees it, the audit log does not.
		const secret = "zz-not-a-year-7731"
		cast, err := c.Prepare(authed(t), "SELECT count(*) FROM participant WHERE birth_year > CAST(? AS INTEGER)")
		must(t, err, "prepare")
		defer cast.Close(authed(t))
		_, _, err = executePrepared(t, c, mem, cast, secret)
		wantCode(t, err, codes.InvalidArgument, "text that is no integer")
		if !strings.Contains(status.Convert(err).Message(), secret) {
			t.Fatalf("expected DuckDB to quote the value to the analyst: %v", err)
		}
		for _, e := range entries {
			if e.Action != "sql.refuse" || e.Fields["error"] == "" {
				t.Fatalf("audit entry of a refusal: %+v", e)
			}
		}
		raw, err := os.ReadFile(n.auditPath)
		must(t, err, "read audit")
		if strings.Contains(string(raw), secret) {
			t.Fatal("a bound parameter value reached the audit log")
		}
	})

	t.Run("an unknown or closed handle is refused clearly", func(t *testing.T) {
		bogus, err := c.LoadPreparedStatementFromResult(&flightsql.CreatePreparedStatementResult{PreparedStatementHandle: []byte("not-a-handle")})
		must(t, err, "load")
		_, err = bogus.Execute(authed(t))
		wantCode(t, err, codes.InvalidArgument, "an unknown handle")
		if !strings.Contains(status.Convert(err).Message(), "unknown prepared statement handle") {
			t.Fatalf("unclear refusal: %v", err)
		}
		wantCode(t, bogus.Close(authed(t)), codes.InvalidArgument, "closing an unknown handle")

		p, err := c.Prepare(authed(t), "SELECT 1")
		must(t, err, "prepare")
		must(t, p.Close(authed(t)), "close")
		again, err := c.LoadPreparedStatementFromResult(&flightsql.CreatePreparedStatementResult{PreparedStatementHandle: p.Handle()})
		must(t, err, "load")
		_, err = again.Execute(authed(t))
		wantCode(t, err, codes.InvalidArgument, "a closed handle")
	})

	t.Run("a write through a prepared statement is refused and changes nothing", func(t *testing.T) {
		state := "SELECT count(*), count(*) FILTER (consent), sum(birth_year) FROM participant"
		before := oracle(t, n.db, state)
		if before[0][0] != "3000" {
			t.Fatalf("fixture: %v", before)
		}
		for _, q := range []string{
			"DELETE FROM participant WHERE birth_year > ?",
			"UPDATE participant SET consent = NOT consent WHERE birth_year > ?",
			"INSERT INTO participant SELECT * FROM participant WHERE birth_year > ?",
		} {
			p, err := c.Prepare(authed(t), q)
			must(t, err, q)
			_, _, err = executePrepared(t, c, mem, p, int64(1900))
			wantCode(t, err, codes.PermissionDenied, q)
			_, err = p.ExecuteUpdate(authed(t))
			wantCode(t, err, codes.PermissionDenied, q+" as an update")
			must(t, p.Close(authed(t)), "close")
			entries := audited(t, n.auditPath, q)
			if len(entries) != 2 || entries[0].Action != "sql.refuse" || entries[1].Action != "sql.refuse" {
				t.Fatalf("%s: audit %+v", q, entries)
			}
		}
		_, err := c.Prepare(authed(t), "COMMIT; DELETE FROM participant")
		wantCode(t, err, codes.InvalidArgument, "two statements")
		p, err := c.Prepare(authed(t), "SELECT * FROM read_csv('/etc/hostname')")
		if err == nil {
			_, _, err = executePrepared(t, c, mem, p)
			p.Close(authed(t))
		}
		if err == nil {
			t.Fatal("a prepared statement read a file")
		}
		if after := oracle(t, n.db, state); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("the store changed: %v, then %v", before, after)
		}
	})

	t.Run("each execution is one audit entry with the hash and the parameter count", func(t *testing.T) {
		q := "SELECT count(*) AS younger FROM participant WHERE birth_year < ?"
		p, err := c.Prepare(authed(t), q)
		must(t, err, "prepare")
		defer p.Close(authed(t))
		for _, year := range []int64{1970, 1980, 1990} {
			_, _, err := executePrepared(t, c, mem, p, year)
			must(t, err, "execute")
		}
		entries := audited(t, n.auditPath, q)
		if len(entries) != 3 {
			t.Fatalf("3 executions, %d audit entries", len(entries))
		}
		for _, e := range entries {
			if e.Action != "sql.query" || e.Fields["parameters"] != "1" || e.Fields["rows"] != "1" || len(e.Fields) != 3 {
				t.Fatalf("audit entry: %+v", e)
			}
		}
	})

	t.Run("open handles are bounded and expire when idle", func(t *testing.T) {
		var clock atomic.Int64
		clock.Store(time.Now().UnixNano())
		ps := n.srv.prepared
		ps.mu.Lock()
		ps.max, ps.now = 2, func() time.Time { return time.Unix(0, clock.Load()) }
		ps.mu.Unlock()
		t.Cleanup(func() {
			ps.mu.Lock()
			ps.max, ps.now = MaxPrepared, time.Now
			ps.mu.Unlock()
		})
		var open []*flightsql.PreparedStatement
		for i := range 3 {
			p, err := c.Prepare(authed(t), fmt.Sprintf("SELECT %d AS n", i))
			must(t, err, "prepare")
			open = append(open, p)
			clock.Add(int64(time.Second))
		}
		_, _, err := executePrepared(t, c, mem, open[0])
		wantCode(t, err, codes.InvalidArgument, "the least recently used of three with room for two")
		got, _, err := executePrepared(t, c, mem, open[2])
		must(t, err, "the newest")
		if fmt.Sprint(got) != "[[2]]" {
			t.Fatalf("the newest statement gave %v", got)
		}
		clock.Add(int64(PreparedIdle + time.Second))
		_, _, err = executePrepared(t, c, mem, open[1])
		wantCode(t, err, codes.InvalidArgument, "idle too long")
	})
}

func fieldNames(sc *arrow.Schema) []string {
	var out []string
	for _, f := range sc.Fields() {
		out = append(out, f.Name)
	}
	return out
}

func TestStatementsAreCountedByOutcome(t *testing.T) {
	n := serve(t)
	reg := prometheus.NewRegistry()
	n.srv.Instrument(reg)
	var want int64
	if err := n.db.QueryRow(`SELECT count(*) FROM participant WHERE gender = 'K'`).Scan(&want); err != nil || want == 0 {
		t.Fatalf("oracle: %d rows, %v", want, err)
	}
	got, err := rows(t, n.client, `SELECT participant_key FROM participant WHERE gender = 'K'`)
	if err != nil || got != want {
		t.Fatalf("%d rows, %v; the store says %d", got, err, want)
	}
	if _, err := rows(t, n.client, `DELETE FROM participant`); err == nil {
		t.Fatal("a delete was run")
	}
	ok := testutil.ToFloat64(n.srv.statements.WithLabelValues("statement", "ok"))
	refused := testutil.ToFloat64(n.srv.statements.WithLabelValues("statement", "refused"))
	if ok != 1 || refused != 1 || testutil.ToFloat64(n.srv.rowsOut) != float64(want) {
		t.Fatalf("ok %v refused %v rows %v, want 1, 1, %d", ok, refused, testutil.ToFloat64(n.srv.rowsOut), want)
	}
}
