package importer

import (
	"fmt"
	"sort"
	"strings"

	"github.com/samsyn/samsyn/schemas"
)

// The staging table holds, per input row: file (index), row (0-based), ident (the outcome of
// samsyn_identity) and every other column of the table as raw text (NULL when empty or absent).
// The rules below turn it into problems and into typed rows; everything they embed in SQL
// comes from the embedded schema, never from input.

var (
	boolTrue  = []string{"true", "t", "1", "ja", "j", "yes", "y", "sant"}
	boolFalse = []string{"false", "f", "0", "nej", "n", "no", "falskt"}
)

func lit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func ident(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func litList(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = lit(v)
	}
	return strings.Join(q, ", ")
}

// check is one rule: when cond holds for a row, the row has a problem in column.
type check struct {
	column   string
	cond     string // SQL boolean over the staging row
	found    string // SQL text expression describing what was found
	expected string
}

func shown(col string) string { return `'"' || left(` + col + `, 40) || '"'` }

// sqlText is the trimmed raw value.
func sqlText(c string) string { return "trim(" + c + ")" }

func validExpr(col *schemas.Column, cl *schemas.CodeList) string {
	c := ident(col.Name)
	switch col.Type {
	case schemas.TypeCode:
		return sqlText(c) + " IN (" + litList(cl.Values()) + ")"
	case schemas.TypeDate:
		return "try_strptime(" + sqlText(c) + ", '%Y-%m-%d') IS NOT NULL"
	case schemas.TypeMonth:
		return "regexp_full_match(" + sqlText(c) + `, '\d{4}-(0[1-9]|1[0-2])(-01)?')`
	case schemas.TypeInt:
		return fmt.Sprintf("coalesce(TRY_CAST(%s AS INTEGER) BETWEEN %d AND %d, false)", sqlText(c), *col.Min, *col.Max)
	case schemas.TypeBool:
		return "lower(" + sqlText(c) + ") IN (" + litList(append(append([]string{}, boolTrue...), boolFalse...)) + ")"
	}
	return "true"
}

func expectedFor(col *schemas.Column, cl *schemas.CodeList) string {
	switch col.Type {
	case schemas.TypeCode:
		return "one of " + cl.Describe(12)
	case schemas.TypeDate:
		return "a date as YYYY-MM-DD"
	case schemas.TypeMonth:
		return "a month as YYYY-MM"
	case schemas.TypeInt:
		return fmt.Sprintf("a whole number from %d to %d", *col.Min, *col.Max)
	case schemas.TypeBool:
		return "true or false (ja/nej, 1/0 also accepted)"
	}
	return ""
}

// typedExpr converts a valid raw value to the column's type.
func typedExpr(col *schemas.Column) string { return convertExpr(col, false) }

// tryTypedExpr is typedExpr that gives NULL rather than an error for an invalid value.
func tryTypedExpr(col *schemas.Column) string { return convertExpr(col, true) }

func convertExpr(col *schemas.Column, lenient bool) string {
	c := ident(col.Name)
	parse, cast := "strptime(", "CAST("
	if lenient {
		parse, cast = "try_strptime(", "TRY_CAST("
	}
	switch col.Type {
	case schemas.TypeKey:
		return "substr(ident, 3)"
	case schemas.TypeDate:
		return "CAST(" + parse + sqlText(c) + ", '%Y-%m-%d') AS DATE)"
	case schemas.TypeMonth:
		return "CAST(" + parse + "left(" + sqlText(c) + ", 7), '%Y-%m') AS DATE)"
	case schemas.TypeInt:
		return cast + sqlText(c) + " AS SMALLINT)"
	case schemas.TypeBool:
		return "CASE WHEN " + c + " IS NULL THEN NULL ELSE lower(" + sqlText(c) + ") IN (" + litList(boolTrue) + ") END"
	default:
		return sqlText(c)
	}
}

func boolIs(c string, v bool) string {
	list := boolFalse
	if v {
		list = boolTrue
	}
	return "coalesce(lower(" + sqlText(ident(c)) + ") IN (" + litList(list) + "), false)"
}

// checks lists every rule for the table, for a node of association.
func checks(s *schemas.Schema, t *schemas.Table, association string) []check {
	var out []check
	// Identity first: it explains itself without showing the value.
	codes := make([]string, 0, len(identityProblems))
	for code := range identityProblems {
		codes = append(codes, code)
	}
	sort.Strings(codes)
	for _, code := range codes {
		p := identityProblems[code]
		out = append(out, check{column: colPersonnummer, cond: "ident = " + lit(code), found: lit(p[0]), expected: p[1]})
	}
	for _, col := range t.Columns {
		if col.Type == schemas.TypeKey {
			continue
		}
		c := ident(col.Name)
		cl, _ := s.CodeList(col.CodeList)
		if !col.Nullable {
			out = append(out, check{column: col.Name, cond: c + " IS NULL", found: "'an empty field'", expected: expectedFor(col, cl)})
		}
		out = append(out, check{column: col.Name, cond: c + " IS NOT NULL AND NOT (" + validExpr(col, cl) + ")", found: shown(c), expected: expectedFor(col, cl)})
	}
	return append(out, tableRules(s, t, association)...)
}

// tableRules are the rules that span columns.
func tableRules(s *schemas.Schema, t *schemas.Table, association string) []check {
	var out []check
	switch t.Name {
	case "participant":
		mun, _ := s.CodeList("municipality")
		own := mun.Where("association", association)
		labels := make([]string, len(own))
		for i, code := range own {
			m, _ := mun.Lookup(code)
			labels[i] = code + " " + m.SV
		}
		out = append(out,
			check{column: "association", cond: `"association" IS NOT NULL AND trim("association") <> ` + lit(association),
				found: shown(`"association"`), expected: association + ", the association of this node"},
			check{column: "municipality", cond: `trim("municipality") IN (` + litList(mun.Values()) + `) AND trim("municipality") NOT IN (` + litList(own) + `)`,
				found: shown(`"municipality"`) + ` || ', which is not in ` + association + `'`, expected: "one of " + strings.Join(labels, ", ")},
			check{column: "city_district", cond: `"city_district" IS NOT NULL AND coalesce(trim("municipality"), '') <> '0180'`,
				found: shown(`"city_district"`) + ` || ' outside Stockholm'`, expected: "an empty field (districts are for municipality 0180 only)"},
			check{column: "consent", cond: boolIs("consent", true) + " AND ident LIKE 'a:%'",
				found: "'consent true with an anonymous_id'", expected: "a personnummer when consent is true"},
			check{column: "consent", cond: boolIs("consent", false) + " AND ident LIKE 'p:%'",
				found: "'consent false with a personnummer'", expected: "anonymous_id instead: without consent a participant is registered anonymously"},
		)
	case "episode":
		out = append(out, check{column: "exit_date",
			cond:  `try_strptime(trim("exit_date"), '%Y-%m-%d') < try_strptime(trim("start_date"), '%Y-%m-%d')`,
			found: shown(`"exit_date"`) + ` || ' before start_date ' || ` + shown(`"start_date"`), expected: "an exit on or after the start"})
		for _, col := range []string{"exit_reason", "outcome", "income_after"} {
			out = append(out, check{column: col, cond: ident(col) + ` IS NOT NULL AND "exit_date" IS NULL`,
				found: shown(ident(col)) + ` || ' without an exit_date'`, expected: "an exit_date, or this field empty while the episode is ongoing"})
		}
		out = append(out, check{column: "exit_reason", cond: `"exit_date" IS NOT NULL AND "exit_reason" IS NULL`,
			found: "'an empty field with an exit_date'", expected: "the exit reason of the ended episode"})
	case "survey":
		qs, _ := s.CodeList("survey_question")
		var pairs []string
		for _, q := range qs.Codes {
			for _, inst := range strings.Split(q.Attrs["instruments"], ",") {
				pairs = append(pairs, q.Code+"/"+strings.TrimSpace(inst))
			}
		}
		out = append(out, check{column: "question",
			cond:  `trim("question") IN (` + litList(qs.Values()) + `) AND NOT (trim("question") || '/' || trim("instrument") IN (` + litList(pairs) + `))`,
			found: shown(`"question"`) + ` || ' in ' || ` + shown(`"instrument"`), expected: "a question that instrument asks"})
	}
	return out
}

// problemQuery returns the SQL that lists the first MaxProblems problems with the total.
func problemQuery(cs []check) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("CASE WHEN %s THEN %s || chr(31) || %s || chr(31) || %s END",
			c.cond, lit(fmt.Sprintf("%04d", i)), c.found, lit(c.column+"\x1f"+c.expected))
	}
	return `WITH p AS (SELECT file, row, unnest(list_filter([` + strings.Join(parts, ",\n ") + `], x -> x IS NOT NULL)) AS problem FROM staged)
SELECT file, row, problem, count(*) OVER () AS total FROM p ORDER BY file, row, problem LIMIT ` + fmt.Sprint(MaxProblems)
}

// countProblemsQuery counts, in one pass over the staged rows, the rows with any problem and
// the rows whose key an earlier row already had. Keys are converted with the TRY_ forms, so
// an invalid value cannot fail the query; the duplicate count is exact when no row has a
// problem, which is the only time it is used.
func countProblemsQuery(cs []check, t *schemas.Table) string {
	conds := make([]string, len(cs))
	for i, c := range cs {
		conds[i] = "coalesce(" + c.cond + ", false)"
	}
	keys := make([]string, len(t.Key))
	for i, k := range t.Key {
		col, _ := t.Column(k)
		keys[i] = tryTypedExpr(col)
	}
	return "SELECT count(*) FILTER (WHERE " + strings.Join(conds, "\n OR ") + "),\n count(*) - count(DISTINCT (" + strings.Join(keys, ", ") + ")) FROM staged"
}
