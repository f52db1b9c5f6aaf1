package synth

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/samsyn/samsyn/schemas"
	"github.com/samsyn/samsyn/schemas/personnummer"
)

func write(t *testing.T, opts Options) (string, Summary) {
	t.Helper()
	dir := t.TempDir()
	sum, err := Write(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return dir, sum
}

// readTree returns every file under dir by its relative path.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out[rel], err = os.ReadFile(path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteIsDeterministic(t *testing.T) {
	for _, format := range Formats {
		t.Run(format, func(t *testing.T) {
			opts := Options{Participants: 400, Seed: 7, Format: format}
			a, _ := write(t, opts)
			b, _ := write(t, opts)
			ta, tb := readTree(t, a), readTree(t, b)
			if len(ta) != 8*4 {
				t.Fatalf("wrote %d files, want 32 (8 associations × 4 tables)", len(ta))
			}
			for name, data := range ta {
				if !bytes.Equal(data, tb[name]) {
					t.Errorf("%s differs between two runs with the same seed", name)
				}
			}
			opts.Seed = 8
			c, _ := write(t, opts)
			tc := readTree(t, c)
			for _, name := range []string{"hbs/participant." + format, "stockholm/episode." + format} {
				if bytes.Equal(ta[name], tc[name]) {
					t.Errorf("%s is the same for seeds 7 and 8", name)
				}
			}
		})
	}
}

func TestAnAssociationDoesNotDependOnTheSelection(t *testing.T) {
	all, _ := write(t, Options{Participants: 500, Seed: 3})
	one, sum := write(t, Options{Participants: 500, Seed: 3, Associations: []string{"varna"}})
	if len(sum.Files) != 4 {
		t.Fatalf("wrote %d files for one association, want 4", len(sum.Files))
	}
	ta, to := readTree(t, all), readTree(t, one)
	for name, data := range to {
		if !strings.HasPrefix(name, "varna"+string(filepath.Separator)) {
			t.Errorf("wrote %s for a run limited to varna", name)
		}
		if !bytes.Equal(data, ta[name]) {
			t.Errorf("%s differs between the full run and the varna-only run", name)
		}
	}
}

func TestCountsSplitTheFederation(t *testing.T) {
	counts, err := Counts(Options{})
	if err != nil {
		t.Fatal(err)
	}
	total, by := 0, map[string]int{}
	for _, c := range counts {
		total += c.Participants
		by[c.Association] = c.Participants
	}
	if total != DefaultParticipants || len(counts) != 8 {
		t.Fatalf("counts %v: want %d participants over 8 associations", counts, DefaultParticipants)
	}
	for a, n := range by {
		if a != "stockholm" && n >= by["stockholm"] {
			t.Errorf("%s has %d participants, Stockholm %d: want Stockholm largest", a, n, by["stockholm"])
		}
	}
	per, err := Counts(Options{PerAssociation: 1000, Associations: []string{"hbs", "suvs"}})
	if err != nil || len(per) != 2 || per[0].Participants != 1000 || per[1].Participants != 1000 {
		t.Fatalf("per-association counts %v, %v: want 1000 each for hbs and suvs", per, err)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"negative participants", Options{Participants: -1}, "must not be negative"},
		{"negative per association", Options{PerAssociation: -5}, "must not be negative"},
		{"both counts", Options{Participants: 10, PerAssociation: 10}, "not both"},
		{"unknown format", Options{Format: "xlsx"}, `unknown format "xlsx"`},
		{"unknown association", Options{Associations: []string{"uppsala"}}, `unknown association "uppsala"`},
		{"association twice", Options{Associations: []string{"hbs", "hbs"}}, "named twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Write(context.Background(), t.TempDir(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestWriteRefusesAnExistingExportUnlessOverwrite(t *testing.T) {
	dir, _ := write(t, Options{Participants: 50, Seed: 1, Format: "parquet"})
	_, err := Write(context.Background(), dir, Options{Participants: 50, Seed: 1})
	if !errors.Is(err, ErrOutputExists) {
		t.Fatalf("second Write: %v, want ErrOutputExists", err)
	}
	other := filepath.Join(dir, "hbs", "notes.txt")
	if err := os.WriteFile(other, []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(context.Background(), dir, Options{Participants: 50, Seed: 1, Overwrite: true}); err != nil {
		t.Fatalf("Write with Overwrite: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "hbs"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{"episode.csv", "followup.csv", "notes.txt", "participant.csv", "survey.csv"}
	if !slices.Equal(names, want) {
		t.Fatalf("hbs holds %v after overwriting Parquet with CSV, want %v", names, want)
	}
}

func TestWriteStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	if _, err := Write(ctx, dir, Options{PerAssociation: 10_000}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write on a cancelled context: %v, want context.Canceled", err)
	}
	tree := readTree(t, dir)
	if len(tree) != 0 {
		t.Fatalf("a cancelled Write left %d files behind", len(tree))
	}
}

func TestColumnsFollowTheSchema(t *testing.T) {
	want := map[string]string{
		"participant": "personnummer,anonymous_id,association,municipality,city_district,gender,birth_year,born_abroad,education,referral_party,income_before,years_on_public_support,consent",
		"episode":     "personnummer,anonymous_id,method,start_date,exit_date,exit_reason,outcome,extent_pct,income_after",
		"followup":    "personnummer,anonymous_id,month,goal_progress",
		"survey":      "personnummer,anonymous_id,instrument,question,answer",
	}
	if got := Tables(); !slices.Equal(got, schemas.V1().TableNames()) {
		t.Fatalf("Tables() = %v, want the schema's %v", got, schemas.V1().TableNames())
	}
	for table, cols := range want {
		if got := strings.Join(Columns(table), ","); got != cols {
			t.Errorf("Columns(%s) = %s, want %s", table, got, cols)
		}
	}
	if Columns("nope") != nil {
		t.Errorf("Columns of an unknown table is not nil")
	}
}

func TestTheModelMatchesTheCodeLists(t *testing.T) {
	if _, err := buildModel(schemas.V1()); err != nil {
		t.Fatal(err)
	}
	if _, err := buildTables(schemas.V1()); err != nil {
		t.Fatal(err)
	}
}

var anonymousIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// TestEveryValueIsValid reads back the default export and checks every value against the
// schema and code lists, the identity rules and the links between tables. It also checks
// that Records gives exactly the rows of the files, in order.
func TestEveryValueIsValid(t *testing.T) {
	opts := Options{Seed: 1}
	dir, sum := write(t, opts)
	s := schemas.V1()
	mun, _ := s.CodeList("municipality")
	questions, _ := s.CodeList("survey_question")
	pnrs, anons := map[string]bool{}, map[string]bool{}
	if got := sum.Rows("participant"); got != DefaultParticipants {
		t.Fatalf("summary counts %d participants, want %d", got, DefaultParticipants)
	}
	for _, f := range sum.Files {
		if _, err := os.Stat(f.Path); err != nil {
			t.Fatalf("summary names %s: %v", f.Path, err)
		}
	}

	for _, assoc := range s.CodeLists["association"].Values() {
		files := map[string][][]string{}
		for _, table := range Tables() {
			fh, err := os.Open(filepath.Join(dir, assoc, table+".csv"))
			if err != nil {
				t.Fatal(err)
			}
			rows, err := csv.NewReader(fh).ReadAll()
			fh.Close()
			if err != nil {
				t.Fatalf("%s/%s.csv: %v", assoc, table, err)
			}
			if !slices.Equal(rows[0], Columns(table)) {
				t.Fatalf("%s/%s.csv header %v, want %v", assoc, table, rows[0], Columns(table))
			}
			files[table] = rows[1:]
			for _, f := range sum.Files {
				if f.Association == assoc && f.Table == table && f.Rows != int64(len(rows)-1) {
					t.Errorf("summary says %d rows in %s/%s, the file has %d", f.Rows, assoc, table, len(rows)-1)
				}
			}
		}

		// Records, in file order, must reproduce the files exactly.
		next := map[string]int{}
		err := Generate(context.Background(), opts, assoc, func(p Participant) error {
			for table, rows := range p.Records() {
				for _, row := range rows {
					i := next[table]
					next[table]++
					if i >= len(files[table]) || !slices.Equal(row, files[table][i]) {
						t.Fatalf("%s/%s.csv row %d differs from Records", assoc, table, i+1)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for table, rows := range files {
			if next[table] != len(rows) {
				t.Errorf("%s/%s.csv has %d rows, Records gave %d", assoc, table, len(rows), next[table])
			}
		}

		ids := map[string]bool{}         // identities of this association's participants
		for _, table := range Tables() { // participant first: the others refer to it
			rows := files[table]
			st, _ := s.Table(table)
			cols := Columns(table)
			keys := map[string]bool{}
			for n, row := range rows {
				where := assoc + "/" + table + ".csv row " + strconv.Itoa(n+1)
				v := map[string]string{}
				for i, c := range cols {
					v[c] = row[i]
				}
				pnr, anon := v[ColPersonnummer], v[ColAnonymousID]
				if (pnr == "") == (anon == "") {
					t.Fatalf("%s: want exactly one of personnummer and anonymous_id", where)
				}
				id := pnr + anon
				if table != "participant" && !ids[id] {
					t.Fatalf("%s: identity not among the participants", where)
				}
				for _, c := range st.Columns[1:] {
					checkValue(t, where, s, c, v[c.Name])
				}
				key := id
				for _, k := range st.Key[1:] {
					key += "|" + v[k]
				}
				if keys[key] {
					t.Fatalf("%s: the key %v appears twice", where, st.Key)
				}
				keys[key] = true

				switch table {
				case "participant":
					ids[id] = true
					if v["association"] != assoc {
						t.Fatalf("%s: association %s in the folder of %s", where, v["association"], assoc)
					}
					if m, _ := mun.Lookup(v["municipality"]); m.Attrs["association"] != assoc {
						t.Fatalf("%s: municipality %s is not in %s", where, v["municipality"], assoc)
					}
					if (v["municipality"] == "0180") != (v["city_district"] != "") {
						t.Fatalf("%s: city_district %q for municipality %s", where, v["city_district"], v["municipality"])
					}
					consent := v["consent"] == "true"
					if consent != (pnr != "") {
						t.Fatalf("%s: consent %s with personnummer set = %v", where, v["consent"], pnr != "")
					}
					if pnr != "" {
						checkPersonnummer(t, where, pnr, v["birth_year"], v["gender"])
						if pnrs[pnr] {
							t.Fatalf("%s: a personnummer appears twice in the federation", where)
						}
						pnrs[pnr] = true
					} else {
						if !anonymousIDPattern.MatchString(anon) {
							t.Fatalf("%s: anonymous_id %q has characters outside [A-Za-z0-9_-] or is too long", where, anon)
						}
						if anons[anon] {
							t.Fatalf("%s: anonymous_id %q appears twice in the federation", where, anon)
						}
						anons[anon] = true
					}
				case "episode":
					checkEpisode(t, where, v)
				case "survey":
					q, _ := questions.Lookup(v["question"])
					if !slices.Contains(strings.Split(q.Attrs["instruments"], ","), v["instrument"]) {
						t.Fatalf("%s: question %s is not asked by %s", where, v["question"], v["instrument"])
					}
				case "followup":
					m, _ := time.Parse("2006-01", v["month"])
					if m.Before(PeriodStart.Month().First().Time()) || m.After(PeriodEnd.Time()) {
						t.Fatalf("%s: month %s outside the period", where, v["month"])
					}
				}
			}
		}
	}
}

func checkValue(t *testing.T, where string, s *schemas.Schema, c *schemas.Column, v string) {
	t.Helper()
	if v == "" {
		if !c.Nullable {
			t.Fatalf("%s: %s is empty but not nullable", where, c.Name)
		}
		return
	}
	ok := true
	switch c.Type {
	case schemas.TypeCode:
		cl, _ := s.CodeList(c.CodeList)
		ok = cl.Contains(v)
	case schemas.TypeInt:
		n, err := strconv.Atoi(v)
		ok = err == nil && n >= *c.Min && n <= *c.Max
	case schemas.TypeBool:
		ok = v == "true" || v == "false"
	case schemas.TypeDate:
		_, err := time.Parse(time.DateOnly, v)
		ok = err == nil
	case schemas.TypeMonth:
		_, err := time.Parse("2006-01", v)
		ok = err == nil
	}
	if !ok {
		t.Fatalf("%s: %s = %q is not a valid %s", where, c.Name, v, c.Type)
	}
}

func checkPersonnummer(t *testing.T, where, pnr, birthYear, gender string) {
	t.Helper()
	if len(pnr) != 12 {
		t.Fatalf("%s: personnummer is not 12 digits", where)
	}
	n, err := personnummer.Parse(pnr)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if strconv.Itoa(n.BirthYear()) != birthYear {
		t.Fatalf("%s: personnummer birth year %d, birth_year %s", where, n.BirthYear(), birthYear)
	}
	if n.Female() != (gender == "K") {
		t.Fatalf("%s: personnummer gender digit does not match gender %s", where, gender)
	}
}

func checkEpisode(t *testing.T, where string, v map[string]string) {
	t.Helper()
	start, _ := time.Parse(time.DateOnly, v["start_date"])
	if start.Before(PeriodStart.Time()) || start.After(PeriodEnd.Time()) {
		t.Fatalf("%s: start_date %s outside the period", where, v["start_date"])
	}
	if v["exit_date"] == "" {
		if v["exit_reason"]+v["outcome"]+v["income_after"]+v["extent_pct"] != "" {
			t.Fatalf("%s: an ongoing episode with exit fields set", where)
		}
		return
	}
	exit, _ := time.Parse(time.DateOnly, v["exit_date"])
	if exit.Before(start) || exit.After(PeriodEnd.Time()) {
		t.Fatalf("%s: exit_date %s before the start or after the period", where, v["exit_date"])
	}
	if v["exit_reason"] == "" || v["outcome"] == "" || v["income_after"] == "" {
		t.Fatalf("%s: an ended episode without exit_reason, outcome or income_after", where)
	}
	ws := v["outcome"] == "work" || v["outcome"] == "studies"
	if ws != (v["extent_pct"] != "") {
		t.Fatalf("%s: extent_pct %q with outcome %s", where, v["extent_pct"], v["outcome"])
	}
	if ws {
		if n, _ := strconv.Atoi(v["extent_pct"]); n < 25 || n > 100 || n%25 != 0 {
			t.Fatalf("%s: extent_pct %s is not 25, 50, 75 or 100", where, v["extent_pct"])
		}
	}
}

// TestPersonnummerAreUniqueAtFullCapacity exhausts one birth year for both genders in every
// association and checks that all numbers are valid and distinct, and that the next
// allocation fails clearly.
func TestPersonnummerAreUniqueAtFullCapacity(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 700,000 numbers; skipped under -short")
	}
	assocs := schemas.V1().CodeLists["association"].Values()
	const year = 1975
	seen := make(map[string]struct{}, 8*2*43_800)
	for i, a := range assocs {
		al, err := newAllocator(a, i, len(assocs))
		if err != nil {
			t.Fatal(err)
		}
		for _, female := range []bool{true, false} {
			for n := 0; n < al.capacity(year); n++ {
				pnr, err := al.personnummer(year, female)
				if err != nil {
					t.Fatalf("%s: allocation %d: %v", a, n, err)
				}
				if _, dup := seen[pnr]; dup {
					t.Fatalf("%s: allocation %d repeats a number", a, n)
				}
				seen[pnr] = struct{}{}
				if n%97 == 0 { // parsing every one triples the time and adds nothing
					p, err := personnummer.Parse(pnr)
					if err != nil || p.BirthYear() != year || p.Female() != female || p.Coordination() != (n >= al.capacity(year)/2) {
						t.Fatalf("%s: allocation %d: parse %v, year %d, female %v", a, n, err, p.BirthYear(), p.Female())
					}
				}
			}
			if _, err := al.personnummer(year, female); !errors.Is(err, ErrCapacity) {
				t.Fatalf("%s: allocation past capacity: %v, want ErrCapacity", a, err)
			}
		}
	}
	if want := len(assocs) * 2 * 2 * 60 * 365; len(seen) != want {
		t.Fatalf("%d distinct numbers, want %d", len(seen), want)
	}
}
