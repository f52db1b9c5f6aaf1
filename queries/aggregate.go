package queries

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"

	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/wire"
	"github.com/samsyn/samsyn/schemas"
)

// RecordKeyMacro is the connection's own macro that yields the node's record-key key
// (disclosure.RecordKeySQLKey): the node's statements compute each participant's record key
// with DuckDB's built-in md5_number, natively and in parallel (see disclosure.RecordKey). The
// node creates the macro as a TEMP macro on each of its own connections (RecordKeyMacroSQL),
// and DuckDB keeps temporary objects per connection: another connection, such as the analysts'
// SQL service's, sees no such function, and no function of Samsyn's sits in the store's shared
// catalog. The key exists in the node's memory and in its connections' temporary catalogs
// only: the macro's definition is the one statement that holds it, and no log or error shows
// it. A catalog view may not name it (no view may use a samsyn_ name). The store's
// configuration is locked before the node serves, so no statement can turn on profiling,
// which prints plans.
const RecordKeyMacro = "samsyn_record_key_key"

// RecordKeyMacroSQL is the statement that defines RecordKeyMacro for key on one connection:
// temporary unless persistent (a private database, such as validation's).
func RecordKeyMacroSQL(key string, persistent bool) (string, error) {
	if len(key) != 64 {
		return "", errors.New("the record-key key must be 64 hexadecimal characters")
	}
	for _, c := range key {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", errors.New("the record-key key must be lower-case hexadecimal")
		}
	}
	kind := "TEMP MACRO"
	if persistent {
		kind = "MACRO"
	}
	return "CREATE OR REPLACE " + kind + " " + RecordKeyMacro + "() AS '" + key + "'", nil
}

// recordKeyNumber is MD5(key ‖ participant key) as DuckDB's HUGEINT, the digest read
// little-endian: its low 32 bits are the record key.
func recordKeyNumber(keyExpr string) string {
	return "md5_number(" + RecordKeyMacro + "() || " + keyExpr + ")"
}

// recordKeyArg is how the generated statements get a participant's record key.
func recordKeyArg(keyExpr string) string {
	return "CAST(" + recordKeyNumber(keyExpr) + " & 4294967295 AS BIGINT)"
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteLit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// dimExpr maps the view's column to the dimension's code, and anything outside its code
// list (including NULL) to disclosure.Other, so no free value can become a released label.
func (d Dimension) dimExpr() string {
	cl, _ := schemas.V1().CodeList(d.CodeList)
	if d.From != "" {
		return "coalesce(" + cl.BandSQL("v."+quoteIdent(d.From)) + ", " + quoteLit(disclosure.Other) + ")"
	}
	vals := cl.Values()
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = quoteLit(v)
	}
	col := "CAST(v." + quoteIdent(d.Name) + " AS VARCHAR)"
	return "coalesce(CASE WHEN " + col + " IN (" + strings.Join(q, ", ") + ") THEN " + col + " END, " + quoteLit(disclosure.Other) + ")"
}

// GroupingSets lists the sets of dimensions to aggregate: all of them, and with totals every
// subset down to the grand total.
func (e *Entry) GroupingSets() [][]int {
	n := len(e.Dimensions)
	if !e.Totals {
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		return [][]int{all}
	}
	var sets [][]int
	for mask := (1 << n) - 1; mask >= 0; mask-- {
		var set []int
		for i := 0; i < n; i++ {
			if mask&(1<<i) != 0 {
				set = append(set, i)
			}
		}
		sets = append(sets, set)
	}
	return sets
}

// groupingSetsSQL writes GroupingSets as SQL over the columns d0, d1, …: "(d0, d1)", "(d1)", ….
func (e *Entry) groupingSetsSQL() []string {
	var out []string
	for _, set := range e.GroupingSets() {
		var cols []string
		for _, i := range set {
			cols = append(cols, fmt.Sprintf("d%d", i))
		}
		out = append(out, "("+strings.Join(cols, ", ")+")")
	}
	return out
}

// AggregateSQL is the only statement a node runs for the entry. It computes the view once into
// c (one row per row of the view: the participant's record-key number, the dimensions' codes,
// the measures), materialised, and then each grouping set as its own GROUP BY over c, the
// sets joined by UNION ALL, with NULL for a margin's dimensions. Each set holds its own hash
// table only while it runs: where DuckDB's GROUPING SETS build the tables of every set at once
// (a DISTINCT aggregate keeps one per set), the three-dimension tables at a million
// participants did not fit 200 MB; this way they do, and the statement is no slower, at a
// million participants or at a few hundred.
//
// Without measures a set is countSQL's one DISTINCT aggregate. With measures a set takes two
// steps: the participants of each cell with the average of their rows' measures (a participant
// is told apart by DuckDB's 64-bit hash of the key together with the record key: two merge
// only if 96 bits coincide, about 10^-17 at a million), then one sum per cell into the columns
// disclosure.Protect consumes: n, cell_key, and per measure its sum, absolute sum, count, sum
// of squares and two largest contributions. Parameters are named ($from); the node writes
// their values in (Bound.Inline).
func (e *Entry) AggregateSQL() (string, error) {
	var b strings.Builder
	b.WriteString("WITH v AS (\n")
	b.WriteString(NormalizeView(e.View))
	b.WriteString("\n),\nc AS MATERIALIZED (\n  SELECT ")
	if len(e.Measures) == 0 {
		b.WriteString(countX("CAST(v.participant_key AS VARCHAR)") + " AS x")
	} else {
		b.WriteString("hash(CAST(v.participant_key AS VARCHAR)) AS pid, " + recordKeyArg("CAST(v.participant_key AS VARCHAR)") + " AS rk")
	}
	for i, d := range e.Dimensions {
		fmt.Fprintf(&b, ",\n    %s AS d%d", d.dimExpr(), i)
	}
	for i, m := range e.Measures {
		fmt.Fprintf(&b, ",\n    CAST(v.%s AS DOUBLE) AS m%d", quoteIdent(m.Name), i)
	}
	b.WriteString("\n  FROM v\n)\n")
	var parts []string
	for _, set := range e.GroupingSets() {
		var sel, grp []string
		for i, d := range e.Dimensions {
			if slices.Contains(set, i) {
				sel = append(sel, fmt.Sprintf("d%d AS %s", i, quoteIdent(d.Name)))
				grp = append(grp, fmt.Sprintf("d%d", i))
			} else {
				sel = append(sel, "CAST(NULL AS VARCHAR) AS "+quoteIdent(d.Name))
			}
		}
		groupBy := ""
		if len(grp) > 0 {
			groupBy = " GROUP BY " + strings.Join(grp, ", ")
		}
		if len(e.Measures) == 0 {
			sel = append(sel, countColumns()...)
			parts = append(parts, "SELECT "+strings.Join(sel, ", ")+" FROM c"+groupBy)
			continue
		}
		inner := append([]string{"pid", "rk"}, grp...)
		cols := slices.Clone(inner)
		for i := range e.Measures {
			cols = append(cols, fmt.Sprintf("avg(m%d) AS m%d", i, i))
		}
		sel = append(sel, e.measureColumns()...)
		parts = append(parts, "SELECT "+strings.Join(sel, ", ")+"\nFROM (SELECT "+strings.Join(cols, ", ")+" FROM c GROUP BY "+strings.Join(inner, ", ")+")"+groupBy)
	}
	b.WriteString(strings.Join(parts, "\nUNION ALL\n") + "\n")
	return b.String(), nil
}

// measureColumns are a cell's columns over its participants (rk, m0, m1, …: one row each).
func (e *Entry) measureColumns() []string {
	out := []string{"count(*) AS " + disclosure.ColN, "CAST(sum(rk) % 4294967296 AS BIGINT) AS " + disclosure.ColCellKey}
	for i, m := range e.Measures {
		mc := fmt.Sprintf("m%d", i)
		out = append(out,
			fmt.Sprintf("coalesce(sum(%s), 0) AS %s", mc, quoteIdent(m.Name+disclosure.SuffixSum)),
			fmt.Sprintf("coalesce(sum(abs(%s)), 0) AS %s", mc, quoteIdent(m.Name+disclosure.SuffixAbs)),
			fmt.Sprintf("count(%s) AS %s", mc, quoteIdent(m.Name+disclosure.SuffixCount)),
			fmt.Sprintf("coalesce(sum(%s * %s), 0) AS %s", mc, mc, quoteIdent(m.Name+disclosure.SuffixSq)),
			fmt.Sprintf("coalesce(max(abs(%s), 2)[1], 0) AS %s", mc, quoteIdent(m.Name+disclosure.SuffixTop1)),
			fmt.Sprintf("coalesce(max(abs(%s), 2)[2], 0) AS %s", mc, quoteIdent(m.Name+disclosure.SuffixTop2)))
	}
	return out
}

// countX is what a row of the view contributes to a table without measures:
//
//	x = 2^104 + (r mod 2^82)
//
// with r the participant's record-key number (recordKeyNumber), whose low 32 bits are the
// record key rk and the next 50 bits h tell participants apart. The rows of one participant
// in a cell share x, so sum(DISTINCT x) over a cell is n·2^104 + 2^32·Σh + Σrk: n is its bits
// from 104 up and the cell key (Σrk modulo 2^32) its low 32 bits (countColumns). Exact while a
// cell holds fewer than 2^22 (4 million) participants; two participants merge only if all 82
// bits coincide (about 10^-13 for a million participants). One MD5 per row gives both parts,
// and one DISTINCT aggregate both columns: DuckDB keeps a table per distinct aggregate.
func countX(keyExpr string) string {
	return "(CAST(1 AS HUGEINT) << 104) + (" + recordKeyNumber(keyExpr) + " & ((CAST(1 AS HUGEINT) << 82) - 1))"
}

// countColumns are n and cell_key of a cell from its rows' x (countX).
func countColumns() []string {
	return []string{"CAST(sum(DISTINCT x) >> 104 AS BIGINT) AS " + disclosure.ColN,
		"CAST(sum(DISTINCT x) % 4294967296 AS BIGINT) AS " + disclosure.ColCellKey}
}

// PlainSQL is the physical limit for the entry, kept for benchmarks and oracle tests (no node
// runs it): the catalog view and one plain DuckDB
// aggregate with no Samsyn function in it — GROUP BY the entry's grouping sets,
// count(DISTINCT participant_key) and the measures' sums — which yields the very cells and n
// the node's statement yields. With keys, it also lists each cell's participants, for the
// cell-key oracle (and no measures).
func (e *Entry) PlainSQL(keys bool) string {
	var sel, dims []string
	for i, d := range e.Dimensions {
		cl, _ := schemas.V1().CodeList(d.CodeList)
		var expr string
		if d.From != "" {
			expr = cl.BandSQL(`v."` + d.From + `"`)
		} else {
			q := make([]string, 0, len(cl.Values()))
			for _, v := range cl.Values() {
				q = append(q, "'"+v+"'")
			}
			expr = fmt.Sprintf(`CASE WHEN CAST(v."%s" AS VARCHAR) IN (%s) THEN CAST(v."%s" AS VARCHAR) END`, d.Name, strings.Join(q, ", "), d.Name)
		}
		sel = append(sel, fmt.Sprintf("coalesce(%s, '%s') AS d%d", expr, disclosure.Other, i))
		dims = append(dims, fmt.Sprintf("d%d", i))
	}
	for i, m := range e.Measures {
		sel = append(sel, fmt.Sprintf(`CAST(v."%s" AS DOUBLE) AS m%d`, m.Name, i))
	}
	sets := e.groupingSetsSQL()
	out := append(append([]string{}, dims...), "count(DISTINCT participant_key) AS n")
	if keys {
		out = append(out, "list(DISTINCT participant_key) AS keys")
	} else {
		for i := range e.Measures {
			out = append(out, fmt.Sprintf("sum(m%d)", i))
		}
	}
	return fmt.Sprintf("SELECT %s\nFROM (SELECT CAST(v.participant_key AS VARCHAR) AS participant_key, %s FROM (%s) v)\nGROUP BY GROUPING SETS (%s)",
		strings.Join(out, ", "), strings.Join(sel, ", "), NormalizeView(e.View), strings.Join(sets, ", "))
}

// Spec is the disclosure spec of the entry's table as released by a node of association,
// or by the whole federation when association is "". Structural zeros are the combinations
// the code lists rule out: a municipality, city district or association outside the scope.
func (e *Entry) Spec(association string) disclosure.Spec {
	spec := disclosure.Spec{Totals: e.Totals}
	for _, d := range e.Dimensions {
		spec.Dimensions = append(spec.Dimensions, disclosure.Dimension{Name: d.Name, Domain: d.Domain()})
	}
	for _, m := range e.Measures {
		spec.Measures = append(spec.Measures, disclosure.Measure{Name: m.Name, Agg: m.Agg})
	}
	scope := []string{association}
	if association == "" {
		all, _ := schemas.V1().CodeList("association")
		scope = all.Values()
	}
	spec.Structural = func(cell map[string]string) bool { return len(e.Fillers(cell, scope)) == 0 }
	return spec
}

// Fillers lists the associations of federation that could have participants in cell: a
// municipality belongs to one association, an association's row to itself, a Stockholm city
// district to Stockholm; margins and Other restrict nothing.
func (e *Entry) Fillers(cell map[string]string, federation []string) []string {
	mun, _ := schemas.V1().CodeList("municipality")
	lists := make(map[string]string, len(e.Dimensions))
	for _, d := range e.Dimensions {
		lists[d.Name] = d.CodeList
	}
	out := append([]string(nil), federation...)
	keep := func(only string) {
		var next []string
		for _, a := range out {
			if a == only {
				next = append(next, a)
			}
		}
		out = next
	}
	for name, v := range cell {
		if v == disclosure.Total || v == disclosure.Other {
			continue
		}
		switch lists[name] {
		case "municipality":
			m, _ := mun.Lookup(v)
			keep(m.Attrs["association"])
		case "association":
			keep(v)
		case "city_district":
			keep("stockholm")
		}
	}
	return out
}

// Coverage is the disclosure.Coverage of a pooled release over federation in which the
// associations of present took part.
func (e *Entry) Coverage(federation, present []string) disclosure.Coverage {
	in := make(map[string]bool, len(present))
	for _, a := range present {
		in[a] = true
	}
	return func(cell map[string]string) (int, int) {
		f := e.Fillers(cell, federation)
		n := 0
		for _, a := range f {
			if in[a] {
				n++
			}
		}
		return len(f), n
	}
}

// Exclusive reports the cells only association can fill, of all of federation: a node
// protects those in its contribution as it would in its own release.
func (e *Entry) Exclusive(association string, federation []string) func(cell map[string]string) bool {
	return func(cell map[string]string) bool {
		f := e.Fillers(cell, federation)
		return len(f) == 1 && f[0] == association
	}
}

// Layout is the frame of the entry's pooled table.
func (e *Entry) Layout() (*disclosure.Layout, error) { return disclosure.NewLayout(e.Spec("")) }

// ReadRelease reads a released table of the entry (a node's own, merged or pooled) by its
// dimension and measure names.
func (e *Entry) ReadRelease(rec arrow.Record) (*wire.Table, error) {
	rd, rm := e.Released()
	dims := make([]string, len(rd))
	for i, d := range rd {
		dims[i] = d.Name
	}
	ms := make([]string, len(rm))
	for i, m := range rm {
		ms[i] = m.Name
	}
	return wire.ReadTable(rec, dims, ms)
}
