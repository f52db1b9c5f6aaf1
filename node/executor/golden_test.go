package executor

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/samsyn/samsyn/node/importer"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/schemas"
	"github.com/samsyn/samsyn/schemas/synth"
)

var update = flag.Bool("update", false, "rewrite testdata/golden")

// TestGoldenReleases runs every catalog query on fixed synthetic data (seed 1, the Stockholm
// node, a fixed secret) and compares the protected table with testdata/golden/<query>.csv.
// Any change to the data model, the synthetic data, the aggregate or disclosure control shows
// up here as a reviewed diff (go test -update rewrites the files).
func TestGoldenReleases(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := synth.Write(ctx, dir, synth.Options{Participants: 1900, Seed: 1, Format: "csv", Associations: []string{"stockholm"}}); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "store.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	im := importer.New(st, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	for _, table := range schemas.V1().TableNames() {
		if _, err := im.Import(ctx, importer.Options{Table: table, Files: []string{filepath.Join(dir, "stockholm", table+".csv")},
			Association: "stockholm", Secret: secret, Now: nil}); err != nil {
			t.Fatal(err)
		}
	}
	cat, err := queries.LoadDir("../../queries/catalog")
	if err != nil {
		t.Fatal(err)
	}
	x, err := New(ctx, st, Options{Association: "stockholm", Secret: secret, Policy: disclosure.Defaults()})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	for _, id := range cat.IDs() {
		e, _ := cat.Get(id)
		if e.IsAnalysis() {
			continue // analyses run through their plugins: analysis_test.go
		}
		b, _ := e.Bind(period)
		var got string
		res, err := x.Run(ctx, e, b)
		switch {
		case errors.Is(err, disclosure.ErrTooSparse):
			got = "refused: too sparse\n"
		case err != nil:
			t.Fatalf("%s: %v", id, err)
		default:
			got = csvText(res.Table)
			res.Table.Release()
		}
		path := filepath.Join("testdata", "golden", id+".csv")
		if *update {
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v (run go test -update)", id, err)
		}
		if got != string(want) {
			t.Errorf("%s: release differs from %s (go test -update after review)\n%s", id, path, firstLineDiff(got, string(want)))
		}
	}
}

func csvText(rec arrow.Record) string {
	var b strings.Builder
	for i := 0; i < int(rec.NumCols()); i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(rec.ColumnName(i))
	}
	b.WriteString("\n")
	for r := 0; r < int(rec.NumRows()); r++ {
		for i := 0; i < int(rec.NumCols()); i++ {
			if i > 0 {
				b.WriteString(",")
			}
			col := rec.Column(i)
			if col.IsNull(r) {
				continue
			}
			b.WriteString(col.(interface{ ValueStr(int) string }).ValueStr(r))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func firstLineDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			return "got  " + g[i] + "\nwant " + w[i]
		}
	}
	return "(lengths differ)"
}
