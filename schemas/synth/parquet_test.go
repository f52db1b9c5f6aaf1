package synth

import (
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"
)

// readParquet reads a Parquet export back as the strings its CSV twin holds.
func readParquet(t *testing.T, path string) (*arrow.Schema, map[string]string, [][]string) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rdr, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer rdr.Close()
	kv := map[string]string{}
	md := rdr.MetaData().KeyValueMetadata()
	for i, k := range md.Keys() {
		kv[k] = md.Values()[i]
	}
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{BatchSize: 1000}, mem)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	defer tbl.Release()
	tr := array.NewTableReader(tbl, 1000)
	defer tr.Release()
	var rows [][]string
	for tr.Next() {
		rec := tr.Record()
		for i := 0; i < int(rec.NumRows()); i++ {
			row := make([]string, rec.NumCols())
			for j, col := range rec.Columns() {
				if col.IsNull(i) {
					continue
				}
				switch c := col.(type) {
				case *array.String:
					row[j] = c.Value(i)
				case *array.Int16:
					row[j] = strconv.Itoa(int(c.Value(i)))
				case *array.Boolean:
					row[j] = strconv.FormatBool(c.Value(i))
				case *array.Date32:
					row[j] = Date(c.Value(i)).String()
				default:
					t.Fatalf("%s: column %s has unexpected type %s", path, rec.ColumnName(j), col.DataType())
				}
			}
			rows = append(rows, row)
		}
	}
	return tbl.Schema(), kv, rows
}

func TestParquetHoldsTheSameValuesAsCSV(t *testing.T) {
	opts := Options{Participants: 600, Seed: 11}
	csvDir, _ := write(t, opts)
	opts.Format = "parquet"
	pqDir, sum := write(t, opts)
	if len(sum.Files) != 32 {
		t.Fatalf("wrote %d Parquet files, want 32", len(sum.Files))
	}
	for _, f := range sum.Files {
		schema, kv, got := readParquet(t, f.Path)
		if !slices.Equal(fieldNames(schema), Columns(f.Table)) {
			t.Fatalf("%s: columns %v, want %v", f.Path, fieldNames(schema), Columns(f.Table))
		}
		if kv["samsyn.synthetic"] != "true" || kv["samsyn.table"] != f.Table {
			t.Errorf("%s: metadata does not mark the data synthetic", f.Path)
		}
		rel, _ := filepath.Rel(pqDir, f.Path)
		fh, err := os.Open(filepath.Join(csvDir, rel[:len(rel)-len(".parquet")]+".csv"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := csv.NewReader(fh).ReadAll()
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		want = want[1:]
		if len(got) != len(want) || int64(len(got)) != f.Rows {
			t.Fatalf("%s: %d rows, the CSV has %d, the summary says %d", f.Path, len(got), len(want), f.Rows)
		}
		for i := range got {
			if !slices.Equal(got[i], want[i]) {
				t.Fatalf("%s row %d: %q, CSV has %q", f.Path, i+1, got[i], want[i])
			}
		}
	}
	// Types as documented: identity and codes string, small ints int16, dates date32.
	want := map[string]arrow.DataType{
		"personnummer": arrow.BinaryTypes.String, "birth_year": arrow.PrimitiveTypes.Int16,
		"born_abroad": arrow.FixedWidthTypes.Boolean, "consent": arrow.FixedWidthTypes.Boolean,
		"start_date": arrow.FixedWidthTypes.Date32, "exit_date": arrow.FixedWidthTypes.Date32,
		"extent_pct": arrow.PrimitiveTypes.Int16, "month": arrow.BinaryTypes.String,
		"goal_progress": arrow.PrimitiveTypes.Int16,
	}
	for _, table := range Tables() {
		for _, f := range ArrowSchema(table).Fields() {
			if w, ok := want[f.Name]; ok && !arrow.TypeEqual(f.Type, w) {
				t.Errorf("%s.%s is %s, want %s", table, f.Name, f.Type, w)
			}
		}
	}
}

func fieldNames(s *arrow.Schema) []string {
	var out []string
	for _, f := range s.Fields() {
		out = append(out, f.Name)
	}
	return out
}
