package queries

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/samsyn/samsyn/queries/disclosure"
)

func TestTheShippedCatalogValidates(t *testing.T) {
	c, err := LoadDir("catalog")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Entries) < 12 {
		t.Fatalf("%d entries, want at least 12", len(c.Entries))
	}
	hashes := map[string]string{}
	for _, id := range c.IDs() {
		e := c.Entries[id]
		h := e.Hash()
		if other, dup := hashes[h]; dup {
			t.Errorf("%s and %s share a hash", id, other)
		}
		hashes[h] = id
	}
}

func TestHashIgnoresLayoutButNotContent(t *testing.T) {
	raw, err := os.ReadFile("catalog/exits_by_municipality.yaml")
	if err != nil {
		t.Fatal(err)
	}
	base, err := ParseEntry("exits_by_municipality.yaml", raw)
	if err != nil {
		t.Fatal(err)
	}
	relaid, err := ParseEntry("exits_by_municipality.yaml", []byte(strings.ReplaceAll(string(raw), "\n", "   \r\n")+"\n# a comment\n"))
	if err != nil {
		t.Fatal(err)
	}
	if base.Hash() != relaid.Hash() {
		t.Fatal("whitespace and comments changed the hash")
	}
	changed, err := ParseEntry("exits_by_municipality.yaml", []byte(strings.Replace(string(raw), "BETWEEN $from AND $to", "BETWEEN $from AND $to AND p.gender = 'K'", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if changed.Hash() == base.Hash() {
		t.Fatal("a changed view kept its hash")
	}
}

// writeEntry writes a variant of a good entry and loads it.
func loadVariant(t *testing.T, id, from, to string) error {
	t.Helper()
	raw, err := os.ReadFile("catalog/exits_by_municipality.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(raw), "id: exits_by_municipality", "id: "+id, 1)
	if !strings.Contains(text, from) {
		t.Fatalf("variant %s: %q not in the base entry", id, from)
	}
	text = strings.Replace(text, from, to, 1)
	path := filepath.Join(t.TempDir(), id+".yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFile(path)
	return err
}

func TestValidationCannotBeTalkedAround(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown_key", "totals: true", "totals: true\ncolour: red", "field colour not found"},
		{"reads_files", "FROM participant p", "FROM read_csv('/etc/passwd') x, participant p", `uses "read_csv"`},
		{"two_statements", "WHERE e.exit_date", "WHERE true; DROP TABLE participant; SELECT 1 WHERE", "contains ';'"},
		{"system_catalog", "FROM participant p", "FROM duckdb_settings() s, participant p", `uses "duckdb_settings"`},
		{"import_log", "FROM participant p", "FROM samsyn_import i, participant p", `uses "samsyn_import"`},
		{"record_key_key", "p.municipality, e.outcome", "p.municipality, e.outcome, samsyn_record_key_key() AS k", `uses "samsyn_record_key_key"`},
		{"unknown_column", "p.municipality, e.outcome", "p.municipality, e.shoe_size AS outcome", "does not run against the schema"},
		{"unknown_table", "JOIN episode e", "JOIN secrets e", "does not run against the schema"},
		{"no_participant_key", "SELECT p.participant_key,", "SELECT", "must yield participant_key"},
		{"key_as_dimension", "dimensions: [municipality, outcome]", "dimensions: [participant_key, outcome]", "identifiers cannot be dimensions"},
		{"date_as_dimension", "dimensions: [municipality, outcome]", "dimensions: [{name: start_date, codelist: quarter}, outcome]", "the view has no column start_date"},
		{"free_text_dimension", "dimensions: [municipality, outcome]", "dimensions: [shoe, outcome]", "not bound to a code list"},
		{"numeric_dimension", "p.municipality, e.outcome", "p.birth_year AS municipality, e.outcome", "is SMALLINT: a dimension must be a code"},
		{"undeclared_param", "BETWEEN $from AND $to", "BETWEEN $from AND $until", "$until, which is not declared"},
		{"unused_param", "to: {type: date, domain: quarter_end}", "to: {type: date, domain: quarter_end}\n  year: {type: int, domain: year}", "declared but not used"},
		{"fine_domain", "domain: quarter_end", "domain: day", `domain "day"`},
		{"measure_not_numeric", "measures: [{name: months_in_project, agg: mean}]", "measures: [{name: outcome, agg: mean}]", "already a dimension"},
		{"bad_agg", "agg: mean", "agg: median", `agg "median"`},
		{"id_mismatch", "version: 1", "version: 0", "version: 0: expected 1 or more"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := loadVariant(t, c.name, c.from, c.to)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
			if !strings.Contains(err.Error(), c.name+".yaml:") {
				t.Fatalf("error %q does not name the file and line", err)
			}
		})
	}
}

func TestBindKeepsParametersInTheirDomains(t *testing.T) {
	c, err := LoadDir("catalog")
	if err != nil {
		t.Fatal(err)
	}
	e, _ := c.Get("exits_by_municipality")
	good := map[string]string{"from": "2021-01-01", "to": "2021-12-31"}
	b, err := e.Bind(good)
	if err != nil || b.Text["from"] != "2021-01-01" || len(b.Args()) != 2 {
		t.Fatalf("good params: %v %v", b, err)
	}
	for _, bad := range []map[string]string{
		{"from": "2021-01-02", "to": "2021-12-31"},
		{"from": "2021-01-01", "to": "2021-12-30"},
		{"from": "2021-01-01"},
		{"from": "2022-01-01", "to": "2021-12-31"},
		{"from": "2021-01-01", "to": "2021-12-31", "gender": "K"},
		{"from": "1999-01-01", "to": "1999-12-31"},
		{"from": "'; DROP TABLE participant; --", "to": "2021-12-31"},
	} {
		if _, err := e.Bind(bad); err == nil {
			t.Errorf("accepted %v", bad)
		} else if !strings.Contains(err.Error(), "exits_by_municipality") {
			t.Errorf("error does not name the query: %v", err)
		}
	}
}

func TestAggregateRunsAndFeedsProtect(t *testing.T) {
	c, err := LoadDir("catalog")
	if err != nil {
		t.Fatal(err)
	}
	db, err := emptySchemaDB()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TEMP TABLE IF NOT EXISTS scratch AS SELECT 1 AS x`); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs() {
		e := c.Entries[id]
		spec := e.Spec("hbs")
		if len(spec.Dimensions) != len(e.Dimensions) {
			t.Fatalf("%s: spec has %d dimensions", id, len(spec.Dimensions))
		}
		for _, d := range spec.Dimensions {
			if len(d.Domain) == 0 {
				t.Errorf("%s: dimension %s has no domain", id, d.Name)
			}
		}
	}
	e, _ := c.Get("exits_by_municipality")
	spec := e.Spec("hbs")
	if !spec.Structural(map[string]string{"municipality": "0180", "outcome": "work"}) ||
		spec.Structural(map[string]string{"municipality": "0126", "outcome": "work"}) ||
		spec.Structural(map[string]string{"municipality": disclosure.Total, "outcome": "work"}) {
		t.Fatal("structural zeros for hbs are wrong")
	}
	fed := e.Spec("")
	if !fed.Structural(map[string]string{"municipality": "0184", "outcome": "work"}) || fed.Structural(map[string]string{"municipality": "0180", "outcome": "work"}) {
		t.Fatal("structural zeros for the federation are wrong: Solna is outside, Stockholm inside")
	}
}

func TestPeriodsComeFromTheFixedGrid(t *testing.T) {
	cat, err := LoadDir("catalog")
	if err != nil {
		t.Fatal(err)
	}
	e, _ := cat.Get("exits_by_municipality")
	for _, ok := range [][2]string{{"2021-01-01", "2021-12-31"}, {"2021-07-01", "2021-09-30"}, {"2020-04-01", "2022-09-30"}, {"2022-10-01", "2022-12-31"}} {
		if _, err := e.Bind(map[string]string{"from": ok[0], "to": ok[1]}); err != nil {
			t.Errorf("%s to %s refused: %v", ok[0], ok[1], err)
		}
	}
	for _, bad := range [][2]string{{"2021-01-01", "2021-06-30"}, {"2021-04-01", "2022-03-31"}, {"2020-01-01", "2021-12-31"}, {"2020-04-01", "2022-12-31"}} {
		_, err := e.Bind(map[string]string{"from": bad[0], "to": bad[1]})
		var pe *ParamError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "fixed grid") {
			t.Errorf("%s to %s: %v", bad[0], bad[1], err)
		}
	}
}

// Inline writes the checked values as literals of the types Bind gives them, quotes codes,
// and refuses a statement naming a parameter that is not bound. (That the inlined statements
// give the very cells the bound ones give is TestTheNodesAggregateAgreesWithAPlainOneAndGoRecordKeys.)
func TestInlineWritesCheckedValuesAsLiterals(t *testing.T) {
	c, err := LoadDir("catalog")
	if err != nil {
		t.Fatal(err)
	}
	e, _ := c.Get("exits_by_municipality")
	b, err := e.Bind(map[string]string{"from": "2021-01-01", "to": "2021-12-31"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Inline("SELECT $from, $to, $from")
	if want := "SELECT TIMESTAMP '2021-01-01 00:00:00', TIMESTAMP '2021-12-31 00:00:00', TIMESTAMP '2021-01-01 00:00:00'"; err != nil || got != want {
		t.Fatalf("Inline: %q, %v; want %q", got, err, want)
	}
	if _, err := b.Inline("SELECT $from, $gender"); err == nil || !strings.Contains(err.Error(), "$gender") {
		t.Fatalf("an unbound parameter: %v", err)
	}
	for _, id := range c.IDs() {
		e := c.Entries[id]
		for name, p := range e.Params {
			if strings.HasPrefix(p.Domain, DomainCodePrefix) {
				args := map[string]string{}
				for n, q := range e.Params {
					args[n] = q.sample()
				}
				b, err := e.Bind(args)
				if err != nil {
					t.Fatal(err)
				}
				got, err := b.Inline("$" + name)
				if err != nil || got != "'"+strings.ReplaceAll(args[name], "'", "''")+"'" {
					t.Fatalf("%s %s: %q, %v", id, name, got, err)
				}
			}
		}
	}
}
