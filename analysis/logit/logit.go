// Package logit is the federated logistic regression behind "what works for whom": each node
// returns, for the coefficients the coordinator sends, the sufficient statistics of one
// iteratively reweighted least squares step (X'WX, X'Wz, the deviance, n); the coordinator
// sums them across nodes without seeing any node's own and solves for the next coefficients
// (Step). The design is an intercept and one indicator per non-reference level of each
// categorical predictor, in the order of analysis.Request.Terms.
package logit

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/samsyn/samsyn/analysis"
)

// Analysis computes one IRLS step's statistics over the node's rows.
type Analysis struct{}

// Run implements analysis.Analysis. Rows whose outcome is not 0 or 1, or whose predictor is
// not one of its levels, are left out (complete cases only).
func (Analysis) Run(ctx context.Context, req *analysis.Request, rows array.RecordReader) (*analysis.Result, error) {
	if req.Kind != analysis.KindGLM || req.Outcome == "" {
		return nil, errors.New("logit needs a glm request with an outcome")
	}
	p := req.Parameters()
	beta := req.Coefficients
	if len(beta) != p {
		return nil, fmt.Errorf("logit: %d coefficients for %d parameters", len(beta), p)
	}
	level := make([]map[string]int, len(req.Predictors))
	for i, x := range req.Predictors {
		if len(x.Levels) < 2 {
			return nil, fmt.Errorf("logit: predictor %s has fewer than two levels", x.Name)
		}
		level[i] = map[string]int{}
		for j, l := range x.Levels {
			level[i][l] = j
		}
	}
	st := &analysis.GLMStats{XtWX: make([]float64, p*p), XtWz: make([]float64, p)}
	x := make([]int, 0, len(req.Predictors)+1) // indices of the design's ones in this row
	err := analysis.EachRow(rows, func(r analysis.Row) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		y, ok, err := r.Int(req.Outcome)
		if err != nil || !ok || (y != 0 && y != 1) {
			return err
		}
		x = append(x[:0], 0)
		col := 1
		for i, pr := range req.Predictors {
			s, ok, err := r.String(pr.Name)
			if err != nil {
				return err
			}
			j, known := level[i][s]
			if !ok || !known {
				return nil
			}
			if j > 0 {
				x = append(x, col+j-1)
			}
			col += len(pr.Levels) - 1
		}
		AddRow(st, beta, x, float64(y))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &analysis.Result{GLM: st}, nil
}

// AddRow adds one participant, whose design row is 1 at the indices x and 0 elsewhere, to
// the statistics at coefficients beta.
func AddRow(st *analysis.GLMStats, beta []float64, x []int, y float64) {
	p := len(beta)
	eta := 0.0
	for _, j := range x {
		eta += beta[j]
	}
	mu := 1 / (1 + math.Exp(-eta))
	w := mu * (1 - mu)
	// z = eta + (y-mu)/w, so w·z = w·eta + y - mu.
	wz := w*eta + y - mu
	for _, a := range x {
		for _, b := range x {
			st.XtWX[a*p+b] += w
		}
		st.XtWz[a] += wz
	}
	st.Deviance += Deviance(y, mu)
	st.N++
}

// Deviance is one observation's contribution to the binomial deviance.
func Deviance(y, mu float64) float64 {
	if y == 1 {
		return -2 * math.Log(mu)
	}
	return -2 * math.Log(1-mu)
}

// Step solves the pooled statistics for the next coefficients: (X'WX)⁻¹ X'Wz. It also
// returns the inverse, whose diagonal gives the standard errors at convergence.
func Step(st analysis.GLMStats) (beta []float64, inv []float64, err error) {
	p := len(st.XtWz)
	inv, err = Invert(st.XtWX, p)
	if err != nil {
		return nil, nil, err
	}
	beta = make([]float64, p)
	for i := 0; i < p; i++ {
		for j := 0; j < p; j++ {
			beta[i] += inv[i*p+j] * st.XtWz[j]
		}
	}
	return beta, inv, nil
}

// ErrSingular is returned for a design whose X'WX cannot be inverted (a level nobody has, or
// two predictors that say the same).
var ErrSingular = errors.New("the model's X'WX is singular")

// Invert inverts the symmetric positive definite p×p matrix a by Cholesky decomposition.
func Invert(a []float64, p int) ([]float64, error) {
	l := make([]float64, p*p)
	for i := 0; i < p; i++ {
		for j := 0; j <= i; j++ {
			s := a[i*p+j]
			for k := 0; k < j; k++ {
				s -= l[i*p+k] * l[j*p+k]
			}
			if i == j {
				if s <= 1e-12*math.Max(1, math.Abs(a[i*p+i])) {
					return nil, ErrSingular
				}
				l[i*p+i] = math.Sqrt(s)
			} else {
				l[i*p+j] = s / l[j*p+j]
			}
		}
	}
	// inverse of L, then (L⁻¹)ᵀ L⁻¹
	li := make([]float64, p*p)
	for i := 0; i < p; i++ {
		li[i*p+i] = 1 / l[i*p+i]
		for j := 0; j < i; j++ {
			s := 0.0
			for k := j; k < i; k++ {
				s -= l[i*p+k] * li[k*p+j]
			}
			li[i*p+j] = s / l[i*p+i]
		}
	}
	inv := make([]float64, p*p)
	for i := 0; i < p; i++ {
		for j := 0; j <= i; j++ {
			s := 0.0
			for k := i; k < p; k++ {
				s += li[k*p+i] * li[k*p+j]
			}
			inv[i*p+j], inv[j*p+i] = s, s
		}
	}
	return inv, nil
}
