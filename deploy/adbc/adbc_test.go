package adbc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-adbc/go/adbc"
	"github.com/apache/arrow-adbc/go/adbc/driver/flightsql"
	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/samsyn/samsyn/node/nodetest"
	"github.com/samsyn/samsyn/node/sqlsrv"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries/audit"
)

const token = "analyst-token-for-adbc-tests"

func TestADBCClientBrowsesQueriesAndRunsPreparedStatementsOnANode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "store.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	nodetest.Seed(t, st.DB(), "varna", 1200)
	log, err := audit.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	srv, err := sqlsrv.New(st.DB(), log, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := sqlsrv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := sqlsrv.NewGRPCServer(srv, token, nil, nil)
	go g.Serve(ln)
	defer g.Stop()

	open := func(tok string) adbc.Connection {
		db, err := flightsql.NewDriver(memory.DefaultAllocator).NewDatabase(map[string]string{
			adbc.OptionKeyURI:                   "grpc://" + ln.Addr().String(),
			flightsql.OptionAuthorizationHeader: "Bearer " + tok,
		})
		if err != nil {
			t.Fatal(err)
		}
		cn, err := db.Open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cn.Close() })
		return cn
	}
	cn := open(token)

	objs, err := cn.GetObjects(ctx, adbc.ObjectDepthTables, nil, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for objs.Next() {
		rec := objs.Record()
		// catalog_db_schemas → db_schema_tables → table_name, flattened by string search:
		// the nested layout is the driver's, what matters is that the tables are there.
		names = append(names, rec.Column(1).String())
	}
	objs.Release()
	all := strings.Join(names, " ")
	for _, want := range []string{"participant", "episode", "followup", "survey"} {
		if !strings.Contains(all, want) {
			t.Fatalf("GetObjects did not list %s: %s", want, all)
		}
	}

	sc, err := cn.GetTableSchema(ctx, nil, nil, "episode")
	if err != nil || sc.NumFields() != 8 || sc.Field(0).Name != "participant_key" {
		t.Fatalf("describe episode: %v %v", sc, err)
	}

	query := func(cn adbc.Connection, q string) (int64, error) {
		stmt, err := cn.NewStatement()
		if err != nil {
			return 0, err
		}
		defer stmt.Close()
		if err := stmt.SetSqlQuery(q); err != nil {
			return 0, err
		}
		rd, _, err := stmt.ExecuteQuery(ctx)
		if err != nil {
			return 0, err
		}
		defer rd.Release()
		var n int64
		for rd.Next() {
			rec := rd.Record()
			if rec.NumCols() == 1 && rec.NumRows() == 1 {
				if c, ok := rec.Column(0).(*array.Int64); ok {
					return c.Value(0), rd.Err()
				}
			}
			n += rec.NumRows()
		}
		return n, rd.Err()
	}
	if n, err := query(cn, "SELECT count(*) FROM participant"); err != nil || n != 1200 {
		t.Fatalf("count: %d %v", n, err)
	}
	if n, err := query(cn, "SELECT * FROM range(200000)"); err != nil || n != 200000 {
		t.Fatalf("large result: %d %v", n, err)
	}
	if _, err := query(cn, "DELETE FROM participant"); err == nil {
		t.Fatal("a write was accepted")
	}
	if _, err := query(open("not-the-token"), "SELECT 1"); err == nil {
		t.Fatal("a wrong token was accepted")
	}

	// A prepared statement with a bound parameter, as JDBC tools run their queries; the
	// oracle is the same question asked of the store directly, the value written in.
	stmt, err := cn.NewStatement()
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	if err := stmt.SetSqlQuery("SELECT participant_key, birth_year FROM participant WHERE birth_year >= ? ORDER BY participant_key"); err != nil {
		t.Fatal(err)
	}
	if err := stmt.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if ps, err := stmt.GetParameterSchema(); err != nil || ps.NumFields() != 1 {
		t.Fatalf("parameter schema: %v %v", ps, err)
	}
	pb := array.NewInt64Builder(memory.DefaultAllocator)
	pb.Append(1985)
	param := pb.NewArray()
	pb.Release()
	bound := array.NewRecord(arrow.NewSchema([]arrow.Field{{Name: "year", Type: arrow.PrimitiveTypes.Int64}}, nil), []arrow.Array{param}, 1)
	param.Release()
	defer bound.Release()
	if err := stmt.Bind(ctx, bound); err != nil {
		t.Fatal(err)
	}
	rd, _, err := stmt.ExecuteQuery(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rd.Next() {
		rec := rd.Record()
		for i := 0; i < int(rec.NumRows()); i++ {
			got = append(got, rec.Column(0).ValueStr(i)+" "+rec.Column(1).ValueStr(i))
		}
	}
	if err := rd.Err(); err != nil {
		t.Fatal(err)
	}
	rd.Release()
	rows, err := st.DB().QueryContext(ctx, "SELECT participant_key, birth_year FROM participant WHERE birth_year >= 1985 ORDER BY participant_key")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for rows.Next() {
		var key string
		var year int
		if err := rows.Scan(&key, &year); err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("%s %d", key, year))
	}
	rows.Close()
	if len(want) == 0 || len(want) == 1200 {
		t.Fatalf("the oracle selects %d of 1200 rows: the test needs some, not all", len(want))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("prepared with a parameter: %d rows, the store has %d", len(got), len(want))
	}
}
