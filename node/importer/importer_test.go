package importer

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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/schemas"
)

var update = flag.Bool("update", false, "rewrite the expected errors in testdata/bad/*.want")

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func openStore(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "store.duckdb"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newImporter(st *store.Store) *Importer {
	return New(st, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
}

func importFiles(t testing.TB, im *Importer, table string, files ...string) (*Result, error) {
	t.Helper()
	return im.Import(context.Background(), Options{Table: table, Files: files, Association: "hbs", Secret: testSecret})
}

func mustImport(t testing.TB, im *Importer, table string, files ...string) *Result {
	t.Helper()
	res, err := importFiles(t, im, table, files...)
	if err != nil {
		t.Fatalf("import %s: %v", table, err)
	}
	return res
}

// state is everything an import could change, as text.
func state(t testing.TB, st *store.Store) string {
	t.Helper()
	var b strings.Builder
	for _, name := range append(schemas.V1().TableNames(), "samsyn_import") {
		rows, err := st.DB().Query("SELECT * FROM " + name + " ORDER BY ALL")
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			b.WriteString(name)
			for _, v := range vals {
				b.WriteString("|")
				b.WriteString(strings.TrimSpace(strings.ReplaceAll(fmtAny(v), "\n", " ")))
			}
			b.WriteString("\n")
		}
		rows.Close()
	}
	return b.String()
}

func fmtAny(v any) string {
	if v == nil {
		return "NULL"
	}
	return strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(fmt0(v), "\t", " "), "\r", ""))
}

func fmt0(v any) string {
	return strings.TrimSpace(strings.Trim(strings.ReplaceAll(sprint(v), "  ", " "), " "))
}

func TestImportGoodFilesAllTables(t *testing.T) {
	st := openStore(t)
	im := newImporter(st)
	res := mustImport(t, im, "participant", "testdata/good/participant.csv", "testdata/good/participant_sv.csv")
	if res.Rows != 6 || res.Changed != 6 || res.Unchanged {
		t.Fatalf("participant: %+v", res)
	}
	for _, table := range []string{"episode", "followup", "survey"} {
		mustImport(t, im, table, "testdata/good/"+table+".csv")
	}
	want := map[string]int64{"participant": 6, "episode": 4, "followup": 3, "survey": 3}
	for table, n := range want {
		got, err := st.Count(context.Background(), table)
		if err != nil || got != n {
			t.Errorf("%s: %d rows, want %d (%v)", table, got, n, err)
		}
	}
	// Swedish headers, semicolons, a BOM, CRLF and quotes all land as canonical values.
	var gender, education string
	var abroad bool
	var consent bool
	err := st.DB().QueryRow(`SELECT gender, education, born_abroad, consent FROM participant WHERE birth_year = 2001`).Scan(&gender, &education, &abroad, &consent)
	if err != nil || gender != "K" || education != "upper_secondary" || !abroad || !consent {
		t.Fatalf("Swedish file: %s %s %v %v %v", gender, education, abroad, consent, err)
	}
	// Nothing of the hand-over stays in the catalog: a view over a released stream would crash a reader.
	var views int
	if err := st.DB().QueryRow(`SELECT count(*) FROM information_schema.tables WHERE table_name = ?`, store.HandOverView).Scan(&views); err != nil || views != 0 {
		t.Fatalf("hand-over view left behind: %d %v", views, err)
	}
	// The association defaults to the node's when the file has no column for it.
	var n int
	if err := st.DB().QueryRow(`SELECT count(*) FROM participant WHERE association IS NULL`).Scan(&n); err == nil && n != 0 {
		t.Fatalf("%d participants without association", n)
	}
}

func TestPersonnummerNeverReachesTheStore(t *testing.T) {
	st := openStore(t)
	mustImport(t, newImporter(st), "participant", "testdata/good/participant.csv")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(st.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, pnr := range []string{"198507141003", "199002281377", "8507141003", "9002281377"} {
		if strings.Contains(string(raw), pnr) {
			t.Fatalf("the store file contains a personnummer")
		}
	}
	key := NewKeyer(testSecret)
	if got := key.Identify("198507141003", "", true, false); !strings.HasPrefix(got, "p:") || strings.Contains(got, "198507141003") {
		t.Fatalf("identify: %q", got)
	}
}

func TestReimportChangesNothing(t *testing.T) {
	st := openStore(t)
	im := newImporter(st)
	first := mustImport(t, im, "participant", "testdata/good/participant.csv")
	before := state(t, st)
	again := mustImport(t, im, "participant", "testdata/good/participant.csv")
	if !again.Unchanged || again.Snapshot != first.Snapshot {
		t.Fatalf("re-import: %+v after %+v", again, first)
	}
	if after := state(t, st); after != before {
		t.Fatalf("re-import changed the store:\n%s\nvs\n%s", before, after)
	}
}

func TestUpsertReplacesByKey(t *testing.T) {
	st := openStore(t)
	im := newImporter(st)
	if snap, err := st.Snapshot(context.Background()); err != nil || snap != "empty" {
		t.Fatalf("snapshot before any import: %q %v", snap, err)
	}
	first := mustImport(t, im, "participant", "testdata/good/participant.csv")
	dir := t.TempDir()
	changed := filepath.Join(dir, "participant.csv")
	raw, _ := os.ReadFile("testdata/good/participant.csv")
	edited := strings.Replace(string(raw), "198507141003,,hbs,0126,,K,1985,false,upper_secondary,FK", "198507141003,,hbs,0128,,K,1985,false,upper_secondary,AF", 1)
	if err := os.WriteFile(changed, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	res := mustImport(t, im, "participant", changed)
	if res.Changed != 1 || res.Snapshot == first.Snapshot {
		t.Fatalf("upsert: %+v", res)
	}
	// The store's snapshot (kept in memory for the executor) follows the import, and is the
	// one its import log names.
	var logged string
	if err := st.DB().QueryRow(`SELECT snapshot_id FROM samsyn_import ORDER BY seq DESC LIMIT 1`).Scan(&logged); err != nil {
		t.Fatal(err)
	}
	if snap, err := st.Snapshot(context.Background()); err != nil || snap != res.Snapshot || snap != logged {
		t.Fatalf("store snapshot %q (%v) after an import that made %q, log says %q", snap, err, res.Snapshot, logged)
	}
	var n int
	var ref string
	if err := st.DB().QueryRow(`SELECT count(*), max(referral_party) FILTER (WHERE birth_year = 1985) FROM participant`).Scan(&n, &ref); err != nil || n != 4 || ref != "AF" {
		t.Fatalf("after upsert: %d rows, referral %q, %v", n, ref, err)
	}
	imports, _ := st.Imports(context.Background())
	if len(imports) != 2 || imports[1].RowsChanged != 1 || imports[1].FileSHA256[0] == imports[0].FileSHA256[0] {
		t.Fatalf("import log: %+v", imports)
	}
}

func TestBadFilesAreRefusedWithTheirExpectedErrorAndChangeNothing(t *testing.T) {
	st := openStore(t)
	im := newImporter(st)
	mustImport(t, im, "participant", "testdata/good/participant.csv")
	before := state(t, st)
	files, _ := filepath.Glob("testdata/bad/*")
	if len(files) < 10 {
		t.Fatalf("only %d bad files found: the corpus is missing", len(files))
	}
	for _, file := range files {
		if strings.HasSuffix(file, ".want") {
			continue
		}
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			table := "participant"
			if strings.HasPrefix(name, "episode_") {
				table = "episode"
			}
			_, err := importFiles(t, im, table, file)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want a validation error, got %v", err)
			}
			wantFile := strings.TrimSuffix(file, filepath.Ext(file)) + filepath.Ext(file) + ".want"
			if *update {
				if err := os.WriteFile(wantFile, []byte(err.Error()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, rerr := os.ReadFile(wantFile)
			if rerr != nil {
				t.Fatalf("no expected error (run go test -update): %v", rerr)
			}
			if got := err.Error() + "\n"; got != string(want) {
				t.Errorf("error:\n%s\nwant:\n%s", got, want)
			}
			for _, pnr := range []string{"199509092855", "199509092856"} {
				if strings.Contains(err.Error(), pnr) || strings.Contains(err.Error(), pnr[2:]) {
					t.Errorf("the error echoes a personnummer")
				}
			}
			if after := state(t, st); after != before {
				t.Fatalf("a refused import changed the store")
			}
		})
	}
}

func TestManyProblemsAreCappedAndCounted(t *testing.T) {
	st := openStore(t)
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("anonymous_id,municipality,gender,birth_year,education,referral_party,income_before,years_on_public_support,consent\n")
	for i := 0; i < 120; i++ {
		b.WriteString("anon-" + itoa(i) + ",0126,Q,1990,upper_secondary,FK,other,lt1,false\n")
	}
	path := filepath.Join(dir, "p.csv")
	os.WriteFile(path, []byte(b.String()), 0o600)
	_, err := importFiles(t, newImporter(st), "participant", path)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Total != 120 || len(ve.Problems) != MaxProblems {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "… and 70 more") || ve.Problems[0].Line != 2 || ve.Problems[49].Line != 51 {
		t.Fatalf("report: %s", err)
	}
}

func TestQuotedLineBreaksKeepLineNumbersRight(t *testing.T) {
	st := openStore(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "p.csv")
	os.WriteFile(path, []byte("anonymous_id,municipality,gender,birth_year,education,referral_party,income_before,years_on_public_support,consent\n"+
		"a1,0126,K,1990,upper_secondary,FK,other,lt1,false\n"+
		"\"a\n2\",0126,K,1990,upper_secondary,FK,other,lt1,false\n"+
		"\n"+
		"a3,0126,K,1990,upper_secondary,FK,other,lt1,maybe\n"), 0o600)
	_, err := importFiles(t, newImporter(st), "participant", path)
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 2 {
		t.Fatalf("got %v", err)
	}
	if ve.Problems[0].Line != 3 || ve.Problems[0].Column != "personnummer" || ve.Problems[1].Line != 6 || ve.Problems[1].Column != "consent" {
		t.Fatalf("problems: %v", err)
	}
}
