package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/samsyn/samsyn/analysis"
	"io"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/xuri/excelize/v2"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/queries/export"
	"github.com/samsyn/samsyn/schemas"
)

// Media types of the result formats.
const (
	TypeJSON    = "application/json"
	TypeCSV     = "text/csv"
	TypeArrow   = "application/vnd.apache.arrow.stream"
	TypeParquet = "application/vnd.apache.parquet"
	TypeXLSX    = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
)

var formats = map[string]string{"json": TypeJSON, "csv": TypeCSV, "arrow": TypeArrow, "parquet": TypeParquet, "xlsx": TypeXLSX}

// negotiate picks the format from ?format= or the Accept header; JSON by default.
func negotiate(r *http.Request) (string, bool) {
	if f := r.URL.Query().Get("format"); f != "" {
		t, ok := formats[f]
		return t, ok
	}
	accept := r.Header.Get("Accept")
	if accept == "" {
		return TypeJSON, true
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		for _, t := range formats {
			if mt == t {
				return t, true
			}
		}
		if mt == "*/*" || mt == "application/*" {
			return TypeJSON, true
		}
	}
	return "", false
}

// Table is a released result as the JSON format carries it.
type Table struct {
	Study      string                             `json:"study"`
	Query      string                             `json:"query"`
	Title      schemas.Text                       `json:"title"`
	Dimensions []Column                           `json:"dimensions"`
	Measures   []Column                           `json:"measures"`
	Rows       []map[string]any                   `json:"rows"`
	Labels     map[string]map[string]schemas.Text `json:"labels"`
	Checks     json.RawMessage                    `json:"checks"`
	Params     map[string]string                  `json:"params"`
	Notes      map[string]schemas.Text            `json:"notes"`
}

// Column describes a dimension or measure.
type Column struct {
	Name     string       `json:"name"`
	CodeList string       `json:"codelist,omitempty"`
	Title    schemas.Text `json:"title"`
	Agg      string       `json:"agg,omitempty"`
}

// Notes explains suppression and noise; every format carries it.
var Notes = map[string]schemas.Text{
	"suppressed": {SV: "färre än 5", EN: "fewer than 5"},
	"total":      {SV: "Totalt", EN: "Total"},
	"other":      {SV: "Övrigt/okänt", EN: "Other/unknown"},
	"missing":    {SV: "saknas (förbundet ingår inte i resultatet)", EN: "missing (the association is not in the result)"},
	"help": {
		SV: "Varje förbund lägger ett litet slumpmässigt brus (högst ±2) på sina egna antal enligt cellnyckelmetoden, och antalen summeras krypterat så att ingen – inte heller samordnaren – ser ett förbunds siffror. Skyddet tillämpas en gång, på länets summa: celler med färre än 5 deltagare visas inte (\"färre än 5\"), och inte heller tomma celler, så att ingen enskild person kan pekas ut. Samma grupp personer får alltid samma brus, så summor kan skilja sig något från totalerna. Medelvärden visas först när minst 10 personer bidrar och inget enskilt värde är så stort att det går att räkna ut. Celler som bara ett förbund som saknas i resultatet kunde fylla visas som \"saknas\", aldrig som 0.",
		EN: "Each association adds a small random noise (at most ±2) to its own counts by the cell key method, and the counts are summed encrypted so that nobody – the coordinator included – sees one association's figures. Protection is applied once, to the county's sum: cells with fewer than 5 participants are not shown (\"fewer than 5\"), nor are empty cells, so that no individual can be singled out. The same group of people always gets the same noise, so sums may differ slightly from totals. Means are shown only where at least 10 people contribute and no single value dominates. Cells that only an association missing from the result could fill show as \"missing\", never as 0.",
	},
}

func (s *Server) tableOf(st *study.Study, res state.Result, rec arrow.Record) (Table, error) {
	e, _ := s.c.Catalog().Get(res.QueryID)
	t := Table{Study: st.ID, Query: res.QueryID, Title: e.Title, Checks: res.Checks, Params: st.Queries[res.QueryIndex].Params,
		Labels: map[string]map[string]schemas.Text{}, Notes: Notes, Rows: []map[string]any{}}
	sch := schemas.V1()
	rdims, rmeasures := e.Released()
	for _, d := range rdims {
		cl, ok := sch.CodeList(d.CodeList)
		title := schemas.Text{SV: d.Name, EN: d.Name}
		if t, known := columnTitles[d.Name]; known {
			title = t
		}
		labels := map[string]schemas.Text{disclosure.Total: Notes["total"], disclosure.Other: Notes["other"]}
		if ok {
			title = cl.Title
			for _, c := range cl.Codes {
				labels[c.Code] = c.Label()
			}
		}
		t.Dimensions = append(t.Dimensions, Column{Name: d.Name, CodeList: d.CodeList, Title: title})
		t.Labels[d.Name] = labels
	}
	if e.IsAnalysis() && e.Analysis.Kind == queries.AnalysisLogit {
		// Terms read "Metod: IPS …"; the intercept is the reference group's log odds.
		labels := map[string]schemas.Text{"(intercept)": {SV: "Konstant (jämförelsegruppen)", EN: "Intercept (reference group)"}}
		for _, p := range e.Analysis.Predictors {
			cl, _ := sch.CodeList(p.CodeList)
			for _, lv := range p.Levels() {
				c, _ := cl.Lookup(lv)
				labels[p.Name+"="+lv] = schemas.Text{SV: cl.Title.SV + ": " + c.SV, EN: cl.Title.EN + ": " + c.EN}
			}
		}
		t.Labels[analysis.ColTerm] = labels
	}
	for _, m := range rmeasures {
		t.Measures = append(t.Measures, Column{Name: m.Name, Agg: m.Agg, Title: measureTitle(m)})
	}
	tbl, err := e.ReadRelease(rec)
	if err != nil {
		return t, err
	}
	for i := 0; i < tbl.Len(); i++ {
		c := tbl.Cell(i)
		row := map[string]any{"suppressed": c.Suppressed, "missing": c.Missing}
		for d, dim := range rdims {
			row[dim.Name] = c.Dims[d]
		}
		row["n"] = nil
		if c.N != nil {
			row["n"] = *c.N
		}
		if c.Associations >= 0 {
			row["associations"] = c.Associations
		}
		for j, m := range rmeasures {
			row[m.Name] = nil
			if c.Measures[j] != nil {
				row[m.Name] = *c.Measures[j]
			}
		}
		t.Rows = append(t.Rows, row)
	}
	return t, nil
}

// columnTitles name the columns of released analyses.
var columnTitles = map[string]schemas.Text{
	"term":        {SV: "Term", EN: "Term"},
	"coefficient": {SV: "Koefficient (log-odds)", EN: "Coefficient (log odds)"},
	"std_error":   {SV: "Standardfel", EN: "Standard error"},
	"z":           {SV: "z", EN: "z"},
	"p_value":     {SV: "p-värde", EN: "p value"},
	"odds_ratio":  {SV: "Oddskvot", EN: "Odds ratio"},
	"or_lower":    {SV: "Oddskvot, nedre 95 %-gräns", EN: "Odds ratio, lower 95 % limit"},
	"or_upper":    {SV: "Oddskvot, övre 95 %-gräns", EN: "Odds ratio, upper 95 % limit"},
	"month_to":    {SV: "Till och med månad", EN: "Through month"},
	"events":      {SV: "Till arbete eller studier", EN: "To work or studies"},
	"censored":    {SV: "Censurerade", EN: "Censored"},
	"survival":    {SV: "Andel ännu inte i arbete eller studier", EN: "Share not yet in work or studies"},
	"lower":       {SV: "Nedre 95 %-gräns", EN: "Lower 95 % limit"},
	"upper":       {SV: "Övre 95 %-gräns", EN: "Upper 95 % limit"},
}

// measureNames name the measures that are computed in a view rather than read from a column.
var measureNames = map[string]schemas.Text{
	"months_in_project": {SV: "Månader i projektet", EN: "Months in the project"},
}

func measureTitle(m queries.Measure) schemas.Text {
	if t, ok := columnTitles[m.Name]; ok {
		return t
	}
	// The measure's own words: the schema column of that name, else a known banding's.
	title := schemas.Text{SV: strings.ReplaceAll(m.Name, "_", " "), EN: strings.ReplaceAll(m.Name, "_", " ")}
	if t, ok := measureNames[m.Name]; ok {
		title = t
	} else {
		for _, tb := range schemas.V1().Tables {
			if c, ok := tb.Column(m.Name); ok {
				title = c.Title
			}
		}
	}
	lower := func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToLower(s[:1]) + s[1:]
	}
	if m.Agg == "mean" {
		return schemas.Text{SV: "Medelvärde: " + lower(title.SV), EN: "Mean " + lower(title.EN)}
	}
	return schemas.Text{SV: "Summa: " + lower(title.SV), EN: "Sum of " + lower(title.EN)}
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, st *study.Study, res state.Result) {
	format, ok := negotiate(r)
	if !ok {
		writeError(w, http.StatusNotAcceptable, "not_acceptable", "formats: json, csv, arrow, parquet, xlsx (?format= or Accept)")
		return
	}
	rec, err := coordinator.Decode(res.Release)
	if err != nil {
		s.storeError(w, err)
		return
	}
	defer rec.Release()
	name := fmt.Sprintf("%s-%s", st.ID, res.QueryID)
	var body []byte
	switch format {
	case TypeJSON:
		t, err := s.tableOf(st, res, rec)
		if err != nil {
			s.storeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, t)
		return
	case TypeArrow:
		body = res.Release
		name += ".arrows"
	case TypeCSV:
		body, err = export.Bytes(func(w io.Writer) error { return export.CSV(w, rec.Schema(), rec) })
		name += ".csv"
	case TypeParquet:
		body, err = export.Bytes(func(w io.Writer) error { return export.Parquet(w, rec.Schema(), rec) })
		name += ".parquet"
	case TypeXLSX:
		var t Table
		if t, err = s.tableOf(st, res, rec); err == nil {
			body, err = toXLSX(t)
		}
		name += ".xlsx"
	}
	if err != nil {
		s.storeError(w, err)
		return
	}
	w.Header().Set("Content-Type", format)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// toXLSX writes a workbook: the result with bilingual headers and labels, a sheet that
// explains suppression and noise, and the output checks.
func toXLSX(t Table) ([]byte, error) {
	f := excelize.NewFile()
	defer f.Close()
	const data = "Resultat"
	if err := f.SetSheetName("Sheet1", data); err != nil {
		return nil, err
	}
	var header []any
	for _, d := range t.Dimensions {
		header = append(header, d.Title.SV+" / "+d.Title.EN+" (kod/code)", d.Title.SV+" / "+d.Title.EN)
	}
	header = append(header, "Antal / Count", "Skyddad / Suppressed")
	for _, m := range t.Measures {
		header = append(header, m.Title.SV+" / "+m.Title.EN)
	}
	header = append(header, "Saknas / Missing", "Förbund i cellen / Associations in the cell")
	if err := f.SetSheetRow(data, "A1", &header); err != nil {
		return nil, err
	}
	// The header row stays in view while scrolling.
	if err := f.SetPanes(data, &excelize.Panes{Freeze: true, YSplit: 1, TopLeftCell: "A2", ActivePane: "bottomLeft"}); err != nil {
		return nil, err
	}
	for i, row := range t.Rows {
		var vals []any
		for _, d := range t.Dimensions {
			code := row[d.Name].(string)
			vals = append(vals, code, t.Labels[d.Name][code].SV)
		}
		// Numbers stay numbers: a withheld count is an empty cell, and why is in its own
		// columns (suppressed, missing), so a spreadsheet sums and charts the column as is.
		vals = append(vals, row["n"], row["suppressed"])
		for _, m := range t.Measures {
			vals = append(vals, row[m.Name])
		}
		vals = append(vals, row["missing"], row["associations"])
		cell, _ := excelize.CoordinatesToCellName(1, i+2)
		if err := f.SetSheetRow(data, cell, &vals); err != nil {
			return nil, err
		}
	}
	if _, err := f.NewSheet("Om sekretess"); err != nil {
		return nil, err
	}
	notes := [][]any{
		{t.Title.SV, t.Title.EN},
		{"Svenska", "English"},
		{Notes["help"].SV, Notes["help"].EN},
		{"Studie / Study", t.Study},
	}
	for i, row := range notes {
		cell, _ := excelize.CoordinatesToCellName(1, i+1)
		if err := f.SetSheetRow("Om sekretess", cell, &row); err != nil {
			return nil, err
		}
	}
	if _, err := f.NewSheet("Kontroller"); err != nil {
		return nil, err
	}
	var checks map[string]any
	_ = json.Unmarshal(t.Checks, &checks)
	r := 1
	for _, k := range slices.Sorted(maps.Keys(checks)) {
		v, _ := json.Marshal(checks[k])
		row := []any{k, string(v)}
		cell, _ := excelize.CoordinatesToCellName(1, r)
		if err := f.SetSheetRow("Kontroller", cell, &row); err != nil {
			return nil, err
		}
		r++
	}
	var buf bytes.Buffer
	if err := f.Write(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
