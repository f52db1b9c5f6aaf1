package importer

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/samsyn/samsyn/schemas"
	"github.com/samsyn/samsyn/schemas/synth"
)

// export reads a table back in the text form of an export, participant_key first.
func export(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	tbl, _ := schemas.V1().Table(table)
	var cols []string
	for _, c := range tbl.Columns {
		switch c.Type {
		case schemas.TypeDate:
			cols = append(cols, fmt.Sprintf("coalesce(strftime(%s, '%%Y-%%m-%%d'), '')", c.Name))
		case schemas.TypeMonth:
			cols = append(cols, fmt.Sprintf("coalesce(strftime(%s, '%%Y-%%m'), '')", c.Name))
		default:
			cols = append(cols, fmt.Sprintf("coalesce(CAST(%s AS VARCHAR), '')", c.Name))
		}
	}
	rows, err := db.Query("SELECT concat_ws('|', " + strings.Join(cols, ", ") + ") FROM " + table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// expected builds the same rows from the generator: identity replaced by the participant key.
func expected(t *testing.T, opts synth.Options, assoc string) map[string][]string {
	t.Helper()
	k := NewKeyer(testSecret)
	out := map[string][]string{}
	err := synth.Generate(context.Background(), opts, assoc, func(p synth.Participant) error {
		ident := k.Identify(p.Personnummer, p.AnonymousID, p.Personnummer != "", p.AnonymousID != "")
		if strings.HasPrefix(ident, "e:") {
			return fmt.Errorf("synthetic identity refused: %s", ident)
		}
		for table, recs := range p.Records() {
			for _, r := range recs {
				out[table] = append(out[table], strings.Join(append([]string{ident[2:]}, r[2:]...), "|"))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for table := range out {
		slices.Sort(out[table])
	}
	return out
}

func TestRoundTripSynthImportExport(t *testing.T) {
	for _, format := range []string{"csv", "parquet"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			opts := synth.Options{Participants: 1900, Seed: 7, Format: format, Associations: []string{"hbs"}}
			if _, err := synth.Write(context.Background(), dir, opts); err != nil {
				t.Fatal(err)
			}
			st := openStore(t)
			im := newImporter(st)
			for _, table := range schemas.V1().TableNames() {
				mustImport(t, im, table, filepath.Join(dir, "hbs", table+"."+format))
			}
			want := expected(t, opts, "hbs")
			for _, table := range schemas.V1().TableNames() {
				got := export(t, st.DB(), table)
				if len(got) == 0 || !slices.Equal(got, want[table]) {
					t.Fatalf("%s: %d rows exported, %d generated; first differing:\n%s", table, len(got), len(want[table]), firstDiff(got, want[table]))
				}
			}
		})
	}
}

func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return "got  " + a[i] + "\nwant " + b[i]
		}
	}
	return "(one is a prefix of the other)"
}
