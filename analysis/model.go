package analysis

import (
	"fmt"
	"math"
)

// ModelScale is the fixed-point factor of a model's statistics in a masked vector: a value
// x travels as round(x·ModelScale) modulo 2^64, exact to about 1e-9 and up to ±8·10^9.
const ModelScale = 1 << 30

// ModelCounts are the counts a model's checks need: participants, events and participants
// per level of each predictor (in Request.Predictors order, reference level first).
type ModelCounts struct {
	N      int64     `json:"n"`
	Events int64     `json:"events"`
	Levels [][]int64 `json:"levels"`
}

// ModelLen is the length of a model contribution: n, events, the level counts, the upper
// triangle of X'WX, X'Wz and the deviance.
func (r *Request) ModelLen() int {
	p := r.Parameters()
	n := 2 + p*(p+1)/2 + p + 1
	for _, x := range r.Predictors {
		n += len(x.Levels)
	}
	return n
}

func toFixed(x float64) uint64 { return uint64(int64(math.Round(x * ModelScale))) }

func fromFixed(u uint64) float64 { return float64(int64(u)) / ModelScale }

// EncodeModel lays out a node's model contribution for the secure sum.
func (r *Request) EncodeModel(c ModelCounts, g GLMStats) ([]uint64, error) {
	p := r.Parameters()
	if len(g.XtWX) != p*p || len(g.XtWz) != p || len(c.Levels) != len(r.Predictors) {
		return nil, fmt.Errorf("%w: model statistics of the wrong size", ErrShape)
	}
	out := make([]uint64, 0, r.ModelLen())
	out = append(out, uint64(c.N), uint64(c.Events))
	for i, x := range r.Predictors {
		if len(c.Levels[i]) != len(x.Levels) {
			return nil, fmt.Errorf("%w: level counts of %s", ErrShape, x.Name)
		}
		for _, n := range c.Levels[i] {
			out = append(out, uint64(n))
		}
	}
	for i := 0; i < p; i++ {
		for j := i; j < p; j++ {
			out = append(out, toFixed(g.XtWX[i*p+j]))
		}
	}
	for _, v := range g.XtWz {
		out = append(out, toFixed(v))
	}
	return append(out, toFixed(g.Deviance)), nil
}

// DecodeModel reads a pooled model vector.
func (r *Request) DecodeModel(vec []uint64) (ModelCounts, GLMStats, error) {
	var c ModelCounts
	p := r.Parameters()
	if len(vec) != r.ModelLen() {
		return c, GLMStats{}, fmt.Errorf("%w: a model vector of %d values, expected %d", ErrShape, len(vec), r.ModelLen())
	}
	g := GLMStats{XtWX: make([]float64, p*p), XtWz: make([]float64, p)}
	c.N, c.Events = int64(vec[0]), int64(vec[1])
	k := 2
	for _, x := range r.Predictors {
		lv := make([]int64, len(x.Levels))
		for j := range lv {
			lv[j] = int64(vec[k])
			k++
		}
		c.Levels = append(c.Levels, lv)
	}
	for i := 0; i < p; i++ {
		for j := i; j < p; j++ {
			v := fromFixed(vec[k])
			g.XtWX[i*p+j], g.XtWX[j*p+i] = v, v
			k++
		}
	}
	for i := range g.XtWz {
		g.XtWz[i] = fromFixed(vec[k])
		k++
	}
	g.Deviance = fromFixed(vec[k])
	g.N = c.N
	return c, g, nil
}

// ErrModelCheck is returned when a model's statistics may not be released: too few
// participants overall, in an outcome class or at a level of a predictor, or too many
// parameters for the participants.
var ErrModelCheck = fmt.Errorf("model refused by its disclosure checks")

// CheckModel applies the model's disclosure checks to counts: at least threshold
// participants, with and without the event, and at every level of every predictor; at
// most maxShare × n parameters.
func (r *Request) CheckModel(c ModelCounts, threshold int64, maxShare float64) error {
	t := threshold
	switch {
	case c.N < t:
		return fmt.Errorf("%w: fewer than %d participants", ErrModelCheck, t)
	case c.Events < t || c.N-c.Events < t:
		return fmt.Errorf("%w: fewer than %d participants with or without the outcome", ErrModelCheck, t)
	case float64(r.Parameters()) > maxShare*float64(c.N):
		return fmt.Errorf("%w: %d parameters for %d participants (at most %.2f per participant)", ErrModelCheck, r.Parameters(), c.N, maxShare)
	}
	for i, x := range r.Predictors {
		for j, n := range c.Levels[i] {
			if n < t {
				return fmt.Errorf("%w: fewer than %d participants at %s=%s", ErrModelCheck, t, x.Name, x.Levels[j])
			}
		}
	}
	return nil
}

// Model check limits, as DataSHIELD's glmDS and vantage6's GLM use them.
const (
	ModelThreshold      = 10
	ModelParameterShare = 0.33
)

// Columns of a released model, one row per term (beside n and suppressed).
const (
	ColTerm        = "term"
	ColCoefficient = "coefficient"
	ColStdError    = "std_error"
	ColZ           = "z"
	ColPValue      = "p_value"
	ColOddsRatio   = "odds_ratio"
	ColORLower     = "or_lower"
	ColORUpper     = "or_upper"
)

// ModelMeasures are the measure columns of a released model, in order.
var ModelMeasures = []string{ColCoefficient, ColStdError, ColZ, ColPValue, ColOddsRatio, ColORLower, ColORUpper}
