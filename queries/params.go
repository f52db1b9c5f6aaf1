package queries

import (
	"database/sql"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/samsyn/samsyn/schemas"
)

// Parameter domains. Every parameter takes values only from a coarse, declared domain.
const (
	DomainQuarterStart = "quarter_start" // a date that starts a quarter: YYYY-01-01, -04-01, -07-01, -10-01
	DomainQuarterEnd   = "quarter_end"   // a date that ends a quarter: YYYY-03-31, -06-30, -09-30, -12-31
	DomainYear         = "year"          // a calendar year
	DomainCodePrefix   = "codelist:"     // a code of the named code list
)

// Years outside this range are refused for every date or year parameter.
const (
	MinYear = 2015
	MaxYear = 2035
)

// ParamError is a parameter value outside its domain.
type ParamError struct {
	Query, Param, Value, Expected string
}

func (e *ParamError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("query %s: parameter %s: missing: expected %s", e.Query, e.Param, e.Expected)
	}
	return fmt.Sprintf("query %s: parameter %s: %q: expected %s", e.Query, e.Param, e.Value, e.Expected)
}

func (p Param) check(s *schemas.Schema) error {
	switch {
	case p.Type == "date" && (p.Domain == DomainQuarterStart || p.Domain == DomainQuarterEnd):
	case p.Type == "int" && p.Domain == DomainYear:
	case p.Type == "code" && strings.HasPrefix(p.Domain, DomainCodePrefix):
		if _, ok := s.CodeList(strings.TrimPrefix(p.Domain, DomainCodePrefix)); !ok {
			return fmt.Errorf("unknown code list in domain %q", p.Domain)
		}
	default:
		return fmt.Errorf("type %q with domain %q: expected date with quarter_start or quarter_end, int with year, or code with codelist:NAME", p.Type, p.Domain)
	}
	return nil
}

// Expected says in words which values the parameter takes.
func (p Param) Expected() string { return p.expected() }

func (p Param) expected() string {
	switch p.Domain {
	case DomainQuarterStart:
		return fmt.Sprintf("the first day of a quarter (YYYY-01-01, -04-01, -07-01 or -10-01), %d–%d", MinYear, MaxYear)
	case DomainQuarterEnd:
		return fmt.Sprintf("the last day of a quarter (YYYY-03-31, -06-30, -09-30 or -12-31), %d–%d", MinYear, MaxYear)
	case DomainYear:
		return fmt.Sprintf("a year from %d to %d", MinYear, MaxYear)
	}
	name := strings.TrimPrefix(p.Domain, DomainCodePrefix)
	if cl, ok := schemas.V1().CodeList(name); ok {
		return "one of " + cl.Describe(10)
	}
	return p.Domain
}

// parse returns the canonical text and the typed SQL value of v, or false.
func (p Param) parse(v string) (string, any, bool) {
	v = strings.TrimSpace(v)
	switch p.Domain {
	case DomainQuarterStart, DomainQuarterEnd:
		t, err := time.Parse("2006-01-02", v)
		if err != nil || t.Year() < MinYear || t.Year() > MaxYear {
			return "", nil, false
		}
		m := int(t.Month())
		if p.Domain == DomainQuarterStart && (t.Day() != 1 || (m-1)%3 != 0) {
			return "", nil, false
		}
		if p.Domain == DomainQuarterEnd && (m%3 != 0 || t.AddDate(0, 0, 1).Day() != 1) {
			return "", nil, false
		}
		return t.Format("2006-01-02"), t, true
	case DomainYear:
		y, err := strconv.Atoi(v)
		if err != nil || y < MinYear || y > MaxYear {
			return "", nil, false
		}
		return strconv.Itoa(y), y, true
	}
	cl, ok := schemas.V1().CodeList(strings.TrimPrefix(p.Domain, DomainCodePrefix))
	if !ok || !cl.Contains(v) {
		return "", nil, false
	}
	return v, v, true
}

// sample is a valid value for validation runs.
func (p Param) sample() string {
	switch p.Domain {
	case DomainQuarterStart:
		return "2021-01-01"
	case DomainQuarterEnd:
		return "2021-12-31"
	case DomainYear:
		return "2021"
	}
	cl, _ := schemas.V1().CodeList(strings.TrimPrefix(p.Domain, DomainCodePrefix))
	return cl.Codes[0].Code
}

// Bound is an entry's parameters, checked and in canonical text form.
type Bound struct {
	Text map[string]string // canonical text, as signed in tickets
	args []any
}

// Args are the typed values as named SQL arguments.
func (b Bound) Args() []any { return b.args }

// Bind checks values against the entry's parameters: every parameter must be given, in its
// domain, and nothing else may be given. A quarter_start parameter may not come after a
// quarter_end one.
func (e *Entry) Bind(values map[string]string) (Bound, error) {
	b := Bound{Text: map[string]string{}}
	for name := range values {
		if _, ok := e.Params[name]; !ok {
			known := make([]string, 0, len(e.Params))
			for n := range e.Params {
				known = append(known, n)
			}
			sort.Strings(known)
			return b, &ParamError{Query: e.ID, Param: name, Value: values[name], Expected: "no such parameter; this query takes: " + strings.Join(known, ", ")}
		}
	}
	names := make([]string, 0, len(e.Params))
	for n := range e.Params {
		names = append(names, n)
	}
	sort.Strings(names)
	var start, end *time.Time
	for _, name := range names {
		p := e.Params[name]
		v, ok := values[name]
		if !ok || strings.TrimSpace(v) == "" {
			return b, &ParamError{Query: e.ID, Param: name, Expected: p.expected()}
		}
		text, typed, ok := p.parse(v)
		if !ok {
			return b, &ParamError{Query: e.ID, Param: name, Value: v, Expected: p.expected()}
		}
		if t, isTime := typed.(time.Time); isTime {
			switch p.Domain {
			case DomainQuarterStart:
				start = &t
			case DomainQuarterEnd:
				end = &t
			}
		}
		b.Text[name] = text
		b.args = append(b.args, sql.Named(name, typed))
	}
	if start != nil && end != nil && start.After(*end) {
		return b, &ParamError{Query: e.ID, Param: "from/to", Value: start.Format("2006-01-02") + " > " + end.Format("2006-01-02"), Expected: "a start on or before the end"}
	}
	if start != nil && end != nil && !OnGrid(*start, *end) {
		return b, &ParamError{Query: e.ID, Param: "from/to", Value: start.Format("2006-01-02") + " to " + end.Format("2006-01-02"),
			Expected: "a period of the fixed grid: one calendar quarter, one calendar year, or the project period " + ProjectStart + " to " + ProjectEnd}
	}
	return b, nil
}

// The project period: MIA Vidare, from the quarter it began (June 2020) to September 2022.
const (
	ProjectStart = "2020-04-01"
	ProjectEnd   = "2022-09-30"
)

// OnGrid reports whether [from, to] is a period of the fixed grid: a calendar quarter, a
// calendar year or the project period. Free windows are refused, so that nested windows
// cannot be played against each other to isolate the participants between their ends.
func OnGrid(from, to time.Time) bool {
	f, t := from.Format("2006-01-02"), to.Format("2006-01-02")
	switch {
	case f == ProjectStart && t == ProjectEnd:
		return true
	case from.Month() == time.January && from.Day() == 1 && t == fmt.Sprintf("%d-12-31", from.Year()):
		return true
	}
	qEnd := time.Date(from.Year(), from.Month()+3, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -1)
	return t == qEnd.Format("2006-01-02") && (from.Month()-1)%3 == 0 && from.Day() == 1
}

// Inline writes each of q's named parameters ($from) as a SQL literal of its checked, typed
// value: a timestamp, a BIGINT or a quoted code (every value has passed its domain in Bind,
// so no free text reaches SQL). DuckDB plans a statement with parameters again on every
// execution and cannot use its constants in planning: with literals, a statement prepared
// once per entry and values runs in about two thirds of the time at a small node. A $name
// that is not bound is an error.
func (b Bound) Inline(q string) (string, error) {
	lits := map[string]string{}
	for _, a := range b.args {
		n, ok := a.(sql.NamedArg)
		if !ok {
			continue
		}
		switch v := n.Value.(type) {
		case time.Time:
			lits[n.Name] = "TIMESTAMP '" + v.UTC().Format("2006-01-02 15:04:05") + "'"
		case int:
			lits[n.Name] = "CAST(" + strconv.Itoa(v) + " AS BIGINT)"
		case string:
			lits[n.Name] = quoteLit(v)
		default:
			return "", fmt.Errorf("parameter %s: no literal form for %T", n.Name, v)
		}
	}
	var missing []string
	out := paramRef.ReplaceAllStringFunc(q, func(m string) string {
		if l, ok := lits[m[1:]]; ok {
			return l
		}
		missing = append(missing, m)
		return m
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("parameters not bound: %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// Positional rewrites q's named parameters ($from) to positional ones ($1) and returns the
// values in that order, for drivers that bind by position only (DuckDB's Arrow interface).
func (b Bound) Positional(q string) (string, []any) {
	pos := map[string]int{}
	var vals []any
	for _, a := range b.args {
		if n, ok := a.(sql.NamedArg); ok {
			pos[n.Name] = len(vals) + 1
			vals = append(vals, n.Value)
		}
	}
	out := paramRef.ReplaceAllStringFunc(q, func(m string) string {
		if i, ok := pos[m[1:]]; ok {
			return "$" + strconv.Itoa(i)
		}
		return m
	})
	return out, vals
}
