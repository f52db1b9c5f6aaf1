package disclosure

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Policy carries the disclosure parameters. Defaults are the floor: a node may make any of
// them stricter, never looser.
type Policy struct {
	// Threshold: a perturbed count below it is suppressed.
	Threshold int `yaml:"threshold" json:"threshold"`
	// MaxSuppressedShare: a table whose non-empty cells are suppressed in a larger share is refused.
	MaxSuppressedShare float64 `yaml:"max_suppressed_share" json:"max_suppressed_share"`
	// MeanMinN: a mean or sum needs at least this perturbed count.
	MeanMinN int `yaml:"mean_min_n" json:"mean_min_n"`
	// DominanceN and DominanceShare: the largest DominanceN contributions may make up at most
	// DominanceShare of a measure's total.
	DominanceN     int     `yaml:"dominance_n" json:"dominance_n"`
	DominanceShare float64 `yaml:"dominance_share" json:"dominance_share"`
	// MaxDeviation and Variance of the cell-key noise (used unless a ptable is loaded).
	MaxDeviation int     `yaml:"max_deviation" json:"max_deviation"`
	Variance     float64 `yaml:"variance" json:"variance"`
	// Monotone builds the monotone variant of the table (NewMonotonePTable): no count is
	// more likely to be released one lower than as itself.
	Monotone bool `yaml:"monotone" json:"monotone,omitempty"`

	ptable *PTable
}

// Defaults is the federation's floor.
func Defaults() Policy {
	p := Policy{Threshold: 5, MaxSuppressedShare: 0.5, MeanMinN: 10, DominanceN: 2, DominanceShare: 0.85, MaxDeviation: 2, Variance: 1}
	pt, err := NewPTable(p.MaxDeviation, p.Variance)
	if err != nil {
		panic(err) // the defaults are fixed and tested
	}
	p.ptable = pt
	return p
}

// ErrLooser is returned for a policy that is looser than Defaults anywhere.
var ErrLooser = errors.New("disclosure policy is looser than the federation's defaults")

// Check reports every way p is looser than Defaults, or malformed.
func (p Policy) Check() error {
	d := Defaults()
	var bad []string
	if p.Threshold < d.Threshold {
		bad = append(bad, fmt.Sprintf("threshold %d < %d", p.Threshold, d.Threshold))
	}
	if p.MaxSuppressedShare > d.MaxSuppressedShare || p.MaxSuppressedShare <= 0 {
		bad = append(bad, fmt.Sprintf("max_suppressed_share %g: expected more than 0 and at most %g", p.MaxSuppressedShare, d.MaxSuppressedShare))
	}
	if p.MeanMinN < d.MeanMinN {
		bad = append(bad, fmt.Sprintf("mean_min_n %d < %d", p.MeanMinN, d.MeanMinN))
	}
	if p.DominanceN < d.DominanceN {
		bad = append(bad, fmt.Sprintf("dominance_n %d < %d", p.DominanceN, d.DominanceN))
	}
	if p.DominanceShare > d.DominanceShare || p.DominanceShare <= 0 {
		bad = append(bad, fmt.Sprintf("dominance_share %g: expected more than 0 and at most %g", p.DominanceShare, d.DominanceShare))
	}
	pt := p.PTable()
	switch {
	case pt == nil && p.Monotone:
		bad = append(bad, fmt.Sprintf("no monotone perturbation table keeps variance %g with max_deviation %d (raise max_deviation or set monotone: false)", p.Variance, p.MaxDeviation))
	case pt == nil:
		bad = append(bad, "no perturbation table")
	case pt.V < d.Variance-1e-9:
		bad = append(bad, fmt.Sprintf("noise variance %g < %g", pt.V, d.Variance))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrLooser, strings.Join(bad, "; "))
	}
	return nil
}

// PTable returns the perturbation table: the loaded one, or the one built from
// MaxDeviation and Variance.
func (p Policy) PTable() *PTable {
	if p.ptable != nil && (p.ptable.D == p.MaxDeviation && p.ptable.V == p.Variance && p.ptable.Monotone == p.Monotone || p.ptable.loaded) {
		return p.ptable
	}
	build := NewPTable
	if p.Monotone {
		build = NewMonotonePTable
	}
	pt, err := build(p.MaxDeviation, p.Variance)
	if err != nil {
		return nil
	}
	return pt
}

// WithPTable returns p using a table a statistics office supplied.
func (p Policy) WithPTable(pt *PTable) Policy {
	pt.loaded = true
	p.ptable = pt
	p.MaxDeviation, p.Variance = pt.D, pt.V
	return p
}

// Prepared returns p with its perturbation table built once, ready for many Protect calls.
func (p Policy) Prepared() (Policy, error) {
	pt := p.PTable()
	if pt == nil {
		return p, fmt.Errorf("disclosure policy: no perturbation table for D=%d V=%g", p.MaxDeviation, p.Variance)
	}
	p.ptable = pt
	return p, p.Check()
}

// Params describes the parameters for release metadata.
func (p Policy) Params() string {
	out := map[string]any{
		"method": "cell_key", "threshold": p.Threshold, "max_suppressed_share": p.MaxSuppressedShare,
		"mean_min_n": p.MeanMinN, "dominance_n": p.DominanceN, "dominance_share": p.DominanceShare,
		"max_deviation": p.MaxDeviation, "variance": p.Variance,
	}
	if p.Monotone {
		out["monotone"] = true
	}
	if pt := p.PTable(); pt != nil {
		out["ptable"] = pt.Hash()
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// PooledParams describes the parameters of a pooled release: the same rules, applied once
// to the sum of the nodes' perturbed cells.
func (p Policy) PooledParams() string {
	var m map[string]any
	_ = json.Unmarshal([]byte(p.Params()), &m)
	m["applied"] = "pooled"
	m["dominance_bound"] = "sqrt(2*sum_sq)"
	b, _ := json.Marshal(m)
	return string(b)
}

// UnmarshalYAML starts from Defaults, so a file names only what it makes stricter, and
// refuses unknown fields.
func (p *Policy) UnmarshalYAML(n *yaml.Node) error {
	raw, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	type plain Policy
	out := plain(Defaults())
	out.ptable = nil
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&out); err != nil {
		return fmt.Errorf("line %d: policy: %w", n.Line, err)
	}
	*p = Policy(out)
	return nil
}
