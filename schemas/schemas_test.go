package schemas

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	_ "github.com/marcboeker/go-duckdb"
)

func TestV1LoadsTheFederationCodeLists(t *testing.T) {
	s := V1()
	mun, ok := s.CodeList("municipality")
	if !ok || len(mun.Codes) != 26 {
		t.Fatalf("want 26 municipalities, got %d", len(mun.Codes))
	}
	assoc, _ := s.CodeList("association")
	in := 0
	for _, m := range mun.Codes {
		a := m.Attrs["association"]
		if a == "" {
			continue
		}
		in++
		if !assoc.Contains(a) {
			t.Errorf("municipality %s names unknown association %q", m.Code, a)
		}
		if m.Attrs["tile"] == "" {
			t.Errorf("municipality %s has no tile", m.Code)
		}
	}
	if in != 21 {
		t.Fatalf("want 21 municipalities in the federation, got %d", in)
	}
	want := map[string]string{"hbs": "0126,0127,0128", "roslagen": "0115,0117,0160,0162,0187,0188", "stockholm": "0180"}
	for a, codes := range want {
		got := mun.Where("association", a)
		slices.Sort(got)
		if strings.Join(got, ",") != codes {
			t.Errorf("association %s: municipalities %s, want %s", a, got, codes)
		}
	}
	for _, name := range []string{"gender", "education", "referral_party", "income_source", "method", "outcome", "exit_reason", "years_on_public_support", "survey_question", "survey_answer", "age_band", "months_in_project_band"} {
		if _, ok := s.CodeList(name); !ok {
			t.Errorf("code list %s missing", name)
		}
	}
}

func TestBanding(t *testing.T) {
	age, _ := V1().CodeList("age_band")
	for v, want := range map[int]string{16: "16-24", 24: "16-24", 25: "25-34", 45: "45-54", 64: "55-64"} {
		if got, ok := age.Band(v); !ok || got != want {
			t.Errorf("Band(%d) = %q, want %q", v, got, want)
		}
	}
	if _, ok := age.Band(15); ok {
		t.Error("15 should be outside every band")
	}
	months, _ := V1().CodeList("months_in_project_band")
	if got, _ := months.Band(40); got != "24+" {
		t.Errorf("open band: %q", got)
	}
}

func openDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", filepath.Join(t.TempDir(), "s.duckdb")+"?autoinstall_known_extensions=false&autoload_known_extensions=false")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestBandSQLAgreesWithBand(t *testing.T) {
	db := openDB(t)
	age, _ := V1().CodeList("age_band")
	for v := 10; v <= 70; v++ {
		var got sql.NullString
		if err := db.QueryRow("SELECT "+age.BandSQL("x")+" FROM (SELECT ?::INTEGER AS x)", v).Scan(&got); err != nil {
			t.Fatal(err)
		}
		want, ok := age.Band(v)
		if got.Valid != ok || got.String != want {
			t.Fatalf("age %d: SQL %v, Go %q", v, got, want)
		}
	}
}

func TestMigrateCreatesTablesMatchingArrowSchemas(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	found, err := Migrate(ctx, db)
	if err != nil || found != 0 {
		t.Fatalf("first migrate: found %d err %v", found, err)
	}
	found, err = Migrate(ctx, db)
	if err != nil || found != Version {
		t.Fatalf("second migrate: found %d err %v", found, err)
	}
	for _, tbl := range V1().Tables {
		rows, err := db.Query("SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position", tbl.Name)
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		for rows.Next() {
			var name, typ, nullable string
			if err := rows.Scan(&name, &typ, &nullable); err != nil {
				t.Fatal(err)
			}
			f := tbl.ArrowSchema().Field(i)
			if name != f.Name || typ != tbl.Columns[i].SQLType() || (nullable == "YES") != f.Nullable {
				t.Errorf("%s column %d: db %s %s %s, schema %s %s %v", tbl.Name, i, name, typ, nullable, f.Name, tbl.Columns[i].SQLType(), f.Nullable)
			}
			i++
		}
		rows.Close()
		if i != len(tbl.Columns) {
			t.Errorf("%s: %d columns in db, %d in schema", tbl.Name, i, len(tbl.Columns))
		}
	}
	if _, err := db.Exec("INSERT INTO samsyn_schema VALUES (99, now())"); err != nil {
		t.Fatal(err)
	}
	if _, err := Migrate(ctx, db); err == nil {
		t.Fatal("a store from a newer schema was accepted")
	}
}

func TestResolveAcceptsSwedishAliases(t *testing.T) {
	p, _ := V1().Table("participant")
	for h, want := range map[string]string{"Kön": "gender", " kommunkod ": "municipality", "FÖDELSEÅR": "birth_year", "gender": "gender"} {
		c, ok := p.Resolve(h)
		if !ok || c.Name != want {
			t.Errorf("Resolve(%q) = %v", h, c)
		}
	}
	if _, ok := p.Resolve("shoe_size"); ok {
		t.Error("unknown header resolved")
	}
}

func TestLoadRejectsBrokenModels(t *testing.T) {
	base := func() fstest.MapFS {
		return fstest.MapFS{
			"v/tables.yaml":       {Data: []byte("version: 1\ntables:\n  - name: t\n    title: {sv: a, en: b}\n    key: [participant_key]\n    columns:\n      - {name: participant_key, type: key, title: {sv: a, en: b}}\n      - {name: g, type: code, codelist: gender, title: {sv: a, en: b}}\n")},
			"v/codes/gender.yaml": {Data: []byte("name: gender\ntitle: {sv: a, en: b}\ncodes:\n  - {code: K, sv: a, en: b}\n")},
		}
	}
	if _, err := load(base(), "v"); err != nil {
		t.Fatalf("good model refused: %v", err)
	}
	cases := map[string]func(fstest.MapFS){
		"unknown field": func(m fstest.MapFS) {
			m["v/codes/gender.yaml"].Data = append(m["v/codes/gender.yaml"].Data, "colour: red\n"...)
		},
		"unknown code list": func(m fstest.MapFS) { delete(m, "v/codes/gender.yaml") },
		"duplicate code": func(m fstest.MapFS) {
			m["v/codes/gender.yaml"].Data = append(m["v/codes/gender.yaml"].Data, "  - {code: K, sv: a, en: b}\n"...)
		},
		"name mismatch": func(m fstest.MapFS) { m["v/codes/sex.yaml"] = m["v/codes/gender.yaml"] },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			m := base()
			mutate(m)
			if _, err := load(m, "v"); err == nil {
				t.Fatal("broken model accepted")
			}
		})
	}
}
