package importer

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/schemas"
	"github.com/samsyn/samsyn/schemas/synth"
)

// benchRows is the number of participant rows the import benchmark loads
// (SAMSYN_BENCH_ROWS, default 1,000,000).
func benchRows(b *testing.B) int {
	if v := os.Getenv("SAMSYN_BENCH_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("SAMSYN_BENCH_ROWS=%q: expected a positive number", v)
		}
		return n
	}
	return 1_000_000
}

// BenchmarkImportVsReadCSV imports one association's participant export of benchRows rows,
// and, in the same run, loads the same file with DuckDB's own read_csv into a table of the
// same schema (no validation, no hashing). It reports both times and their ratio.
func BenchmarkImportVsReadCSV(b *testing.B) {
	rows := benchRows(b)
	dir := b.TempDir()
	if _, err := synth.Write(context.Background(), dir, synth.Options{PerAssociation: rows, Seed: 1, Format: "csv", Associations: []string{"hbs"}}); err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(dir, "hbs", "participant.csv")
	tbl, _ := schemas.V1().Table("participant")
	var ours, theirs time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		st, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "ours.duckdb"))
		if err != nil {
			b.Fatal(err)
		}
		im := newImporter(st)
		b.StartTimer()
		start := time.Now()
		res, err := im.Import(context.Background(), Options{Table: "participant", Files: []string{file}, Association: "hbs", Secret: testSecret})
		ours += time.Since(start)
		b.StopTimer()
		if err != nil || res.Changed != int64(rows) {
			b.Fatalf("import: %v %+v", err, res)
		}
		st.Close()

		db, err := store.OpenDB(filepath.Join(b.TempDir(), "duckdb.duckdb"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := db.Exec(tbl.DDL()); err != nil {
			b.Fatal(err)
		}
		cols := tbl.ColumnNames()[1:]
		q := "INSERT INTO participant SELECT coalesce(CAST(personnummer AS VARCHAR), anonymous_id), " + strings.Join(cols, ", ") +
			" FROM read_csv('" + file + "', header = true, all_varchar = false)"
		b.StartTimer()
		start = time.Now()
		if _, err := db.Exec(q); err != nil {
			b.Fatal(err)
		}
		theirs += time.Since(start)
		b.StopTimer()
		db.Close()
	}
	b.ReportMetric(ours.Seconds()/float64(b.N), "samsyn_s")
	b.ReportMetric(theirs.Seconds()/float64(b.N), "duckdb_read_csv_s")
	b.ReportMetric(ours.Seconds()/theirs.Seconds(), "ratio")
	b.ReportMetric(float64(rows)*float64(b.N)/ours.Seconds(), "rows/s")
}
