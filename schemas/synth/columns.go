package synth

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/samsyn/samsyn/schemas"
)

// The identity columns an export carries in place of participant_key. The node's importer
// hashes the personnummer (or the anonymous id) into participant_key the moment it reads it.
const (
	ColPersonnummer = "personnummer"
	ColAnonymousID  = "anonymous_id"
)

// kind is how a column's value is held in Go.
type kind int

const (
	kindString kind = iota // codes, identities and months (YYYY-MM)
	kindInt
	kindBool
	kindDate
)

// field reads one column of one row of a table from a participant. Exactly the accessor
// for its kind is set; ok false means the value is empty (null).
type field struct {
	kind kind
	str  func(p *Participant, row int) string
	int  func(p *Participant, row int) (int, bool)
	bool func(p *Participant, row int) (bool, bool)
	date func(p *Participant, row int) (Date, bool)
}

// text is the value as it appears in a CSV file; empty for null.
func (f *field) text(p *Participant, row int) string {
	switch f.kind {
	case kindInt:
		if v, ok := f.int(p, row); ok {
			return strconv.Itoa(v)
		}
	case kindBool:
		if v, ok := f.bool(p, row); ok {
			return strconv.FormatBool(v)
		}
	case kindDate:
		if v, ok := f.date(p, row); ok {
			return v.String()
		}
	default:
		return f.str(p, row)
	}
	return ""
}

func strField(f func(p *Participant, row int) string) field {
	return field{kind: kindString, str: f}
}

// identity columns are the same in every table.
var identityFields = map[string]field{
	ColPersonnummer: strField(func(p *Participant, _ int) string { return p.Personnummer }),
	ColAnonymousID:  strField(func(p *Participant, _ int) string { return p.AnonymousID }),
}

// tableFields maps every non-key column of the schema to where the generator keeps it.
// A column the schema gains without an entry here stops the package with a clear error.
var tableFields = map[string]map[string]field{
	"participant": {
		"association":   strField(func(p *Participant, _ int) string { return p.Association }),
		"municipality":  strField(func(p *Participant, _ int) string { return p.Municipality }),
		"city_district": strField(func(p *Participant, _ int) string { return p.CityDistrict }),
		"gender":        strField(func(p *Participant, _ int) string { return p.Gender }),
		"birth_year": {kind: kindInt, int: func(p *Participant, _ int) (int, bool) {
			return p.BirthYear, true
		}},
		"born_abroad": {kind: kindBool, bool: func(p *Participant, _ int) (bool, bool) {
			return p.BornAbroad.Bool, p.BornAbroad.Valid
		}},
		"education":               strField(func(p *Participant, _ int) string { return p.Education }),
		"referral_party":          strField(func(p *Participant, _ int) string { return p.ReferralParty }),
		"income_before":           strField(func(p *Participant, _ int) string { return p.IncomeBefore }),
		"years_on_public_support": strField(func(p *Participant, _ int) string { return p.YearsOnPublicSupport }),
		"consent": {kind: kindBool, bool: func(p *Participant, _ int) (bool, bool) {
			return p.Consent, true
		}},
	},
	"episode": {
		"method": strField(func(p *Participant, i int) string { return p.Episodes[i].Method }),
		"start_date": {kind: kindDate, date: func(p *Participant, i int) (Date, bool) {
			return p.Episodes[i].Start, true
		}},
		"exit_date": {kind: kindDate, date: func(p *Participant, i int) (Date, bool) {
			return p.Episodes[i].Exit, p.Episodes[i].Ended
		}},
		"exit_reason": strField(func(p *Participant, i int) string { return p.Episodes[i].ExitReason }),
		"outcome":     strField(func(p *Participant, i int) string { return p.Episodes[i].Outcome }),
		"extent_pct": {kind: kindInt, int: func(p *Participant, i int) (int, bool) {
			return p.Episodes[i].ExtentPct, p.Episodes[i].ExtentPct != 0
		}},
		"income_after": strField(func(p *Participant, i int) string { return p.Episodes[i].IncomeAfter }),
	},
	"followup": {
		"month": strField(func(p *Participant, i int) string { return p.Followups[i].Month.String() }),
		"goal_progress": {kind: kindInt, int: func(p *Participant, i int) (int, bool) {
			return p.Followups[i].GoalProgress, true
		}},
	},
	"survey": {
		"instrument": strField(func(p *Participant, i int) string { return p.Survey[i].Instrument }),
		"question":   strField(func(p *Participant, i int) string { return p.Survey[i].Question }),
		"answer":     strField(func(p *Participant, i int) string { return p.Survey[i].Answer }),
	},
}

// tableRows is the number of rows a participant has in each table.
var tableRows = map[string]func(p *Participant) int{
	"participant": func(*Participant) int { return 1 },
	"episode":     func(p *Participant) int { return len(p.Episodes) },
	"followup":    func(p *Participant) int { return len(p.Followups) },
	"survey":      func(p *Participant) int { return len(p.Survey) },
}

// column is one column of an export file.
type column struct {
	name     string
	nullable bool
	field    field
}

// table is one export file's layout: the schema's columns with participant_key replaced by
// the two identity columns.
type table struct {
	name    string
	columns []column
	rows    func(p *Participant) int
}

// wantKind is the Go kind each schema column type is generated as. Months are written as
// YYYY-MM text, the form the importer reads, in CSV and Parquet alike.
var wantKind = map[schemas.ColumnType]kind{
	schemas.TypeCode: kindString, schemas.TypeMonth: kindString,
	schemas.TypeInt: kindInt, schemas.TypeBool: kindBool, schemas.TypeDate: kindDate,
}

var loadTables = sync.OnceValues(func() ([]*table, error) { return buildTables(schemas.V1()) })

func buildTables(s *schemas.Schema) ([]*table, error) {
	var out []*table
	for _, st := range s.Tables {
		fields, ok := tableFields[st.Name]
		rows := tableRows[st.Name]
		if !ok || rows == nil {
			return nil, fmt.Errorf("schema table %s has no synthetic generator", st.Name)
		}
		t := &table{name: st.Name, rows: rows}
		for _, name := range []string{ColPersonnummer, ColAnonymousID} {
			t.columns = append(t.columns, column{name: name, nullable: true, field: identityFields[name]})
		}
		for _, c := range st.Columns {
			if c.Type == schemas.TypeKey {
				continue
			}
			f, ok := fields[c.Name]
			if !ok {
				return nil, fmt.Errorf("schema column %s.%s has no synthetic generator", st.Name, c.Name)
			}
			if k, ok := wantKind[c.Type]; !ok || k != f.kind {
				return nil, fmt.Errorf("schema column %s.%s has type %s, which its synthetic generator does not produce", st.Name, c.Name, c.Type)
			}
			t.columns = append(t.columns, column{name: c.Name, nullable: c.Nullable, field: f})
		}
		out = append(out, t)
	}
	return out, nil
}

// mustTables is for the accessors below, which have no error to return: the table layout
// depends only on the embedded schema, so tests catch any error before a build ships.
func mustTables() []*table {
	ts, err := loadTables()
	if err != nil {
		panic(err)
	}
	return ts
}

// Tables lists the export tables in schema order.
func Tables() []string {
	var out []string
	for _, t := range mustTables() {
		out = append(out, t.name)
	}
	return out
}

// Columns lists the columns of the export file for table, in file order: personnummer,
// anonymous_id, then the schema's columns after participant_key. It returns nil for a table
// the schema does not have.
func Columns(tableName string) []string {
	for _, t := range mustTables() {
		if t.name == tableName {
			out := make([]string, len(t.columns))
			for i, c := range t.columns {
				out[i] = c.name
			}
			return out
		}
	}
	return nil
}

// Records returns the participant's rows per table, each row the exact strings a CSV export
// holds in the order of Columns (an empty string for null).
func (p Participant) Records() map[string][][]string {
	out := map[string][][]string{}
	for _, t := range mustTables() {
		rows := make([][]string, t.rows(&p))
		for i := range rows {
			rows[i] = t.appendRow(nil, &p, i)
		}
		out[t.name] = rows
	}
	return out
}

func (t *table) appendRow(dst []string, p *Participant, row int) []string {
	for i := range t.columns {
		dst = append(dst, t.columns[i].field.text(p, row))
	}
	return dst
}
