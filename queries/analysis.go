package queries

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/samsyn/samsyn/analysis"
	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/schemas"
)

// Kinds of analysis entry.
const (
	// AnalysisSurvival counts events and censorings per stratum and month; the pooled counts
	// are released under the survival threshold and turned into Kaplan–Meier curves.
	AnalysisSurvival = "survival"
	// AnalysisCells is a count table computed by a plugin and protected like any table.
	AnalysisCells = "cells"
	// AnalysisLogit is a federated logistic regression.
	AnalysisLogit = "logit"
)

// Code lists of the last two dimensions of a survival entry.
const (
	SurvivalMonthList  = "survival_month"
	SurvivalStatusList = "survival_status"
)

// Analysis makes a catalog entry an analysis: its view's rows go to the pinned plugin, not
// to the node's aggregate. All of it is part of the signed entry.
type Analysis struct {
	Kind   string `yaml:"kind" json:"kind"`
	Plugin string `yaml:"plugin" json:"plugin"` // the binary's name in the node's plugin directory
	// SHA256 pins the plugin binary (hex); `samsyn catalog pin` fills it before signing.
	SHA256 string `yaml:"sha256" json:"sha256"`
	// Columns are the view columns the plugin sees (beside the record key and a per-call
	// participant number); a column that is a dimension goes as its code.
	Columns       []string          `yaml:"columns,omitempty" json:"columns,omitempty"`
	Options       map[string]string `yaml:"options,omitempty" json:"options,omitempty"`
	Outcome       string            `yaml:"outcome,omitempty" json:"outcome,omitempty"`
	Predictors    []Predictor       `yaml:"predictors,omitempty" json:"predictors,omitempty"`
	MaxIterations int               `yaml:"max_iterations,omitempty" json:"max_iterations,omitempty"`
}

// Predictor is a categorical predictor of a model: a dimension and its reference level (the
// code list's first code when not given).
type Predictor struct {
	Dimension `yaml:",inline" json:",inline"`
	Reference string `yaml:"reference,omitempty" json:"reference,omitempty"`
}

// UnmarshalYAML accepts "gender" as well as {name: method, reference: PRE_REHAB}.
func (p *Predictor) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		p.Name = n.Value
		return nil
	}
	var raw struct {
		Name      string `yaml:"name"`
		CodeList  string `yaml:"codelist"`
		From      string `yaml:"from"`
		Reference string `yaml:"reference"`
	}
	if err := n.Decode(&raw); err != nil {
		return err
	}
	p.Name, p.CodeList, p.From, p.Reference = raw.Name, raw.CodeList, raw.From, raw.Reference
	return nil
}

// Levels is the predictor's levels, reference first.
func (p Predictor) Levels() []string {
	dom := p.Domain()
	if p.Reference == "" {
		return dom
	}
	out := []string{p.Reference}
	for _, v := range dom {
		if v != p.Reference {
			out = append(out, v)
		}
	}
	return out
}

// DefaultMaxIterations bounds a model's iterations when the entry does not.
const DefaultMaxIterations = 25

// Iterations is the most steps a node answers for one model.
func (a *Analysis) Iterations() int {
	if a.MaxIterations > 0 {
		return a.MaxIterations
	}
	return DefaultMaxIterations
}

var (
	pluginName = regexp.MustCompile(`^samsyn-analysis-[a-z0-9-]{1,40}$`)
	hexSHA256  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// IsAnalysis reports whether the entry runs a plugin.
func (e *Entry) IsAnalysis() bool { return e.Analysis != nil }

// validateAnalysis checks the analysis block statically (the view's columns are checked
// against the schema in checkAnalysisColumns).
func (e *Entry) validateAnalysis(s *schemas.Schema) error {
	a := e.Analysis
	switch {
	case !pluginName.MatchString(a.Plugin):
		return e.fail("analysis.plugin", "%q: expected samsyn-analysis-NAME", a.Plugin)
	case a.SHA256 != "" && !hexSHA256.MatchString(a.SHA256):
		return e.fail("analysis.sha256", "expected 64 lowercase hex characters (or empty until `samsyn catalog pin`)")
	case len(e.Measures) > 0:
		return e.fail("measures", "an analysis has no measures")
	}
	for i, c := range a.Columns {
		if identifierColumns[c] || !paramPattern.MatchString(c) {
			return e.fail(fmt.Sprintf("analysis.columns[%d]", i), "%q cannot go to a plugin", c)
		}
	}
	switch a.Kind {
	case AnalysisSurvival, AnalysisCells:
		if len(a.Columns) == 0 {
			return e.fail("analysis.columns", "name the view columns the plugin sees")
		}
		if len(a.Predictors) > 0 || a.Outcome != "" || a.MaxIterations != 0 {
			return e.fail("analysis", "outcome, predictors and max_iterations belong to a logit analysis")
		}
		for k, v := range a.Options {
			if !slices.Contains(a.Columns, v) {
				return e.fail("analysis.options."+k, "%q is not one of the columns", v)
			}
		}
		if a.Kind == AnalysisSurvival {
			n := len(e.Dimensions)
			if n < 2 || e.Dimensions[n-2].CodeList != SurvivalMonthList || e.Dimensions[n-1].CodeList != SurvivalStatusList {
				return e.fail("dimensions", "a survival analysis ends with the dimensions month (codelist %s) and status (codelist %s)", SurvivalMonthList, SurvivalStatusList)
			}
			if a.Options["time"] == "" || a.Options["event"] == "" {
				return e.fail("analysis.options", "a survival analysis names its time and event columns")
			}
		}
	case AnalysisLogit:
		if len(e.Dimensions) > 0 || e.Totals {
			return e.fail("dimensions", "a logit analysis has no dimensions or totals: its predictors are under analysis")
		}
		if len(a.Columns) > 0 {
			return e.fail("analysis.columns", "a logit analysis sends its outcome and predictors, nothing else")
		}
		if !paramPattern.MatchString(a.Outcome) || identifierColumns[a.Outcome] {
			return e.fail("analysis.outcome", "name the view's 0/1 outcome column")
		}
		if len(a.Predictors) == 0 {
			return e.fail("analysis.predictors", "a model needs at least one predictor")
		}
		if a.MaxIterations < 0 || a.MaxIterations > 50 {
			return e.fail("analysis.max_iterations", "%d: expected 1–50", a.MaxIterations)
		}
		seen := map[string]bool{a.Outcome: true}
		p := 1
		for i := range a.Predictors {
			pr := &a.Predictors[i]
			field := fmt.Sprintf("analysis.predictors[%d]", i)
			if err := bindDimension(s, &pr.Dimension); err != nil {
				return e.fail(field, "%s: %v", pr.Name, err)
			}
			if seen[pr.Name] {
				return e.fail(field, "%s appears twice", pr.Name)
			}
			seen[pr.Name] = true
			if pr.Reference != "" && !slices.Contains(pr.Domain(), pr.Reference) {
				return e.fail(field, "reference %q is not a code of %s", pr.Reference, pr.CodeList)
			}
			p += len(pr.Domain()) - 1
		}
		if p > 64 {
			return e.fail("analysis.predictors", "%d parameters: expected at most 64", p)
		}
	default:
		return e.fail("analysis.kind", "%q: expected survival, cells or logit", a.Kind)
	}
	return nil
}

// checkAnalysisColumns checks the analysis's columns against the view's (name → type).
func (e *Entry) checkAnalysisColumns(cols map[string]string) error {
	a := e.Analysis
	dims := map[string]Dimension{}
	for _, d := range e.Dimensions {
		dims[d.Name] = d
	}
	check := func(field, name string, d Dimension, coded bool) error {
		src := name
		if coded && d.From != "" {
			src = d.From
		}
		typ, ok := cols[src]
		switch {
		case !ok:
			return e.fail(field, "the view has no column %s", src)
		case coded && d.From != "" && !numericTypes.MatchString(typ):
			return e.fail(field, "%s is %s: a banded column must be numeric", src, typ)
		case coded && d.From == "" && typ != "VARCHAR" && typ != "BOOLEAN":
			return e.fail(field, "%s is %s: a coded column must be a code (VARCHAR)", src, typ)
		}
		return nil
	}
	for i, c := range a.Columns {
		d, coded := dims[c]
		if err := check(fmt.Sprintf("analysis.columns[%d]", i), c, d, coded); err != nil {
			return err
		}
	}
	if a.Kind == AnalysisLogit {
		if typ := cols[a.Outcome]; !numericTypes.MatchString(typ) {
			return e.fail("analysis.outcome", "the view has no numeric column %s", a.Outcome)
		}
		for i, p := range a.Predictors {
			if err := check(fmt.Sprintf("analysis.predictors[%d]", i), p.Name, p.Dimension, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// AnalysisSQL is the statement a node runs for an analysis entry: the view's rows with the
// participant key replaced by its record key and a per-call participant number, each coded
// column mapped to its code list (anything else to Other), for a model only the complete
// cases. Nothing else of the view reaches the plugin.
func (e *Entry) AnalysisSQL() (string, error) {
	a := e.Analysis
	if a == nil {
		return "", fmt.Errorf("%s is not an analysis", e.ID)
	}
	var b strings.Builder
	b.WriteString("WITH v AS MATERIALIZED (\n")
	b.WriteString(NormalizeView(e.View))
	b.WriteString("\n),\nw AS (\n  SELECT " + recordKeyArg("CAST(v.participant_key AS VARCHAR)") + " AS " + analysis.ColRecordKey +
		",\n    dense_rank() OVER (ORDER BY v.participant_key) AS " + analysis.ColParticipant)
	dims := map[string]Dimension{}
	for _, d := range e.Dimensions {
		dims[d.Name] = d
	}
	for _, c := range a.Columns {
		if d, coded := dims[c]; coded {
			fmt.Fprintf(&b, ",\n    %s AS %s", d.dimExpr(), quoteIdent(c))
		} else {
			fmt.Fprintf(&b, ",\n    v.%s AS %s", quoteIdent(c), quoteIdent(c))
		}
	}
	if a.Kind == AnalysisLogit {
		fmt.Fprintf(&b, ",\n    CAST(v.%s AS BIGINT) AS %s", quoteIdent(a.Outcome), quoteIdent(a.Outcome))
		for _, p := range a.Predictors {
			fmt.Fprintf(&b, ",\n    %s AS %s", p.dimExpr(), quoteIdent(p.Name))
		}
	}
	b.WriteString("\n  FROM v\n)\nSELECT * FROM w")
	if a.Kind == AnalysisLogit {
		conds := []string{fmt.Sprintf("%s IN (0, 1)", quoteIdent(a.Outcome))}
		for _, p := range a.Predictors {
			conds = append(conds, fmt.Sprintf("%s <> %s", quoteIdent(p.Name), quoteLit(disclosure.Other)))
		}
		b.WriteString("\nWHERE " + strings.Join(conds, " AND "))
	}
	return b.String(), nil
}

// Request is the plugin request of an analysis entry with bound parameters.
func (e *Entry) Request(b Bound) *analysis.Request {
	a := e.Analysis
	req := &analysis.Request{Analysis: e.ID, Params: b.Text, Options: a.Options}
	switch a.Kind {
	case AnalysisLogit:
		req.Kind, req.Outcome = analysis.KindGLM, a.Outcome
		for _, p := range a.Predictors {
			req.Predictors = append(req.Predictors, analysis.Predictor{Name: p.Name, Levels: p.Levels()})
		}
	default:
		req.Kind = analysis.KindCells
		for _, d := range e.Dimensions {
			req.Dimensions = append(req.Dimensions, analysis.Dimension{Name: d.Name, Domain: d.Domain()})
		}
	}
	return req
}

// Released is the shape of the entry's released table: its dimensions and its measures. A
// table releases its own; a survival analysis its strata, the month and the curve; a model
// one row per term.
func (e *Entry) Released() ([]Dimension, []Measure) {
	if e.Analysis == nil {
		return e.Dimensions, e.Measures
	}
	var ms []Measure
	switch e.Analysis.Kind {
	case AnalysisSurvival:
		n := len(e.Dimensions)
		dims := append(append([]Dimension{}, e.Dimensions[:n-2]...), Dimension{Name: disclosure.ColMonth, CodeList: SurvivalMonthList})
		for _, m := range disclosure.SurvivalMeasures {
			ms = append(ms, Measure{Name: m, Agg: "value"})
		}
		return dims, ms
	case AnalysisLogit:
		for _, m := range analysis.ModelMeasures {
			ms = append(ms, Measure{Name: m, Agg: "value"})
		}
		return []Dimension{{Name: analysis.ColTerm}}, ms
	}
	return e.Dimensions, e.Measures
}
