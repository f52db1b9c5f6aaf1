package adbc

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-adbc/go/adbc"
	"github.com/apache/arrow-adbc/go/adbc/driver/flightsql"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/samsyn/samsyn/node/nodetest"
	"github.com/samsyn/samsyn/node/sqlsrv"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries/audit"
)

const token = "analyst-token-for-adbc-tests"

func TestADBCClientBrowsesAndQueriesANode(t *testing.T) {
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
}
