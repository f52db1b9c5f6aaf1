package disclosure

import (
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Entry is one row of a perturbation table: a count i is released as j = i + v with
// probability p, chosen when the cell key, as a fraction of 2^32, falls in [Lo, Hi).
type Entry struct {
	I, J int
	P    float64
	V    int
	Lo   float64
	Hi   float64
}

// PTable is a perturbation table for counts. Row i applies to the count i; the last row
// (IMax) applies to every count from IMax up.
type PTable struct {
	D    int     // maximum deviation
	V    float64 // target variance of the noise
	IMax int
	// Monotone tables keep p(i→i−1) ≤ p(i→i) in every row: a small count is never more likely
	// to be released one lower than as itself.
	Monotone bool

	loaded bool      // read from a file rather than built from D and V
	rows   [][]Entry // by i, entries ascending by j
}

// NewPTable builds the maximum-entropy perturbation table with maximum deviation d and
// noise variance v: for every count i ≥ 1 the noise has mean zero and variance v on the
// support max(-i, -d)..d (so no result is negative), with the distribution of largest
// entropy among those; zero stays zero. Row d+1 covers all counts above d.
//
// This is the table the sdcTools ptable R package builds with mono=FALSE (equal to 1e-10 for
// D=2, V=1, checked against the package's own code). Its default, mono=TRUE, differs in the
// truncated rows of small counts; NewMonotonePTable is our monotone variant.
func NewPTable(d int, v float64) (*PTable, error) { return newPTable(d, v, false) }

// NewMonotonePTable builds the perturbation table as NewPTable does, but where a row's
// maximum-entropy distribution would release a count one lower more often than unchanged
// (p(i→i−1) > p(i→i), which happens in the truncated rows of small counts), it takes the
// distribution of largest entropy with p(i→i−1) = p(i→i), mean zero and the same variance v.
// For D=2, V=1 row 1 is then (3/8, 3/8, 1/8, 1/8) for 0, 1, 2, 3. The sdcTools package's
// mono=TRUE table is built by another optimiser and, by the package's own run, gives up some
// variance in row 1 (0.93); this variant keeps the variance and so the protection of every
// row, and refuses a (d, v) where the tie cannot keep it (for D=2, V above 1.2; for D=3, a
// count of 1 reaches 12/7 at most). It was not compared number by number with the package:
// the package is not on this machine.
func NewMonotonePTable(d int, v float64) (*PTable, error) { return newPTable(d, v, true) }

func newPTable(d int, v float64, monotone bool) (*PTable, error) {
	if d < 1 || d > 10 {
		return nil, fmt.Errorf("ptable: maximum deviation %d: expected 1 to 10", d)
	}
	if v <= 0 || v > float64(d*d) {
		return nil, fmt.Errorf("ptable: variance %g: expected more than 0 and at most D² = %d", v, d*d)
	}
	pt := &PTable{D: d, V: v, IMax: d + 1, rows: make([][]Entry, d+2), Monotone: monotone}
	pt.rows[0] = []Entry{{I: 0, J: 0, P: 1, V: 0}}
	for i := 1; i <= d+1; i++ {
		lo := -min(i, d)
		probs, err := maxEntropy(lo, d, v, false)
		if err != nil {
			return nil, fmt.Errorf("ptable: count %d: %w", i, err)
		}
		if monotone && probs[-lo-1] > probs[-lo] {
			if probs, err = maxEntropy(lo, d, v, true); err != nil {
				return nil, fmt.Errorf("ptable: count %d, monotone: %w", i, err)
			}
		}
		for k, p := range probs {
			noise := lo + k
			pt.rows[i] = append(pt.rows[i], Entry{I: i, J: i + noise, P: p, V: noise})
		}
	}
	pt.fillIntervals()
	return pt, nil
}

// maxEntropy finds p over lo..hi with sum 1, mean 0, variance v and maximum entropy:
// p_k ∝ exp(a·k + b·k²), solved for (a, b) by Newton's method. With tie, it also holds
// p(−1) = p(0): p_k ∝ exp(a·k + b·k² + c·t(k)) with t(−1) = 1, t(0) = −1, else 0, solved for
// (a, b, c).
func maxEntropy(lo, hi int, v float64, tie bool) ([]float64, error) {
	if tie {
		return maxEntropyTied(lo, hi, v)
	}
	n := hi - lo + 1
	p := make([]float64, n)
	var a, b float64
	for iter := 0; iter < 200; iter++ {
		var z float64
		for k := 0; k < n; k++ {
			x := float64(lo + k)
			p[k] = math.Exp(a*x + b*x*x)
			z += p[k]
		}
		var m1, m2, m3, m4 float64
		for k := range p {
			p[k] /= z
			x := float64(lo + k)
			m1 += p[k] * x
			m2 += p[k] * x * x
			m3 += p[k] * x * x * x
			m4 += p[k] * x * x * x * x
		}
		f1, f2 := m1, m2-v
		if math.Abs(f1) < 1e-13 && math.Abs(f2) < 1e-13 {
			return p, nil
		}
		// Jacobian of (E[x], E[x²]) in (a, b): the covariance matrix of (x, x²).
		j11, j12, j22 := m2-m1*m1, m3-m1*m2, m4-m2*m2
		det := j11*j22 - j12*j12
		if det <= 1e-300 || math.IsNaN(det) {
			break
		}
		da := (f1*j22 - f2*j12) / det
		db := (f2*j11 - f1*j12) / det
		step := 1.0
		if s := math.Max(math.Abs(da), math.Abs(db)); s > 2 {
			step = 2 / s
		}
		a -= step * da
		b -= step * db
	}
	return nil, fmt.Errorf("no distribution on %d..%d has mean 0 and variance %g", lo, hi, v)
}

// maxEntropyTied is maxEntropy with p(−1) = p(0), by Newton's method on three parameters.
func maxEntropyTied(lo, hi int, v float64) ([]float64, error) {
	n := hi - lo + 1
	if lo > -1 {
		return nil, fmt.Errorf("support %d..%d has no −1 to tie", lo, hi)
	}
	feat := func(k int) [3]float64 {
		x := float64(lo + k)
		t := 0.0
		switch lo + k {
		case -1:
			t = 1
		case 0:
			t = -1
		}
		return [3]float64{x, x*x - v, t}
	}
	p := make([]float64, n)
	var th [3]float64
	for iter := 0; iter < 500; iter++ {
		var z float64
		for k := 0; k < n; k++ {
			f := feat(k)
			p[k] = math.Exp(th[0]*f[0] + th[1]*f[1] + th[2]*f[2])
			z += p[k]
		}
		var m [3]float64
		var c [3][3]float64
		for k := range p {
			p[k] /= z
			f := feat(k)
			for r := 0; r < 3; r++ {
				m[r] += p[k] * f[r]
				for s := 0; s < 3; s++ {
					c[r][s] += p[k] * f[r] * f[s]
				}
			}
		}
		if math.Abs(m[0]) < 1e-13 && math.Abs(m[1]) < 1e-13 && math.Abs(m[2]) < 1e-13 {
			return p, nil
		}
		for r := 0; r < 3; r++ {
			for s := 0; s < 3; s++ {
				c[r][s] -= m[r] * m[s]
			}
		}
		step, ok := solve3(c, m)
		if !ok {
			break
		}
		scale := 1.0
		if mx := math.Max(math.Abs(step[0]), math.Max(math.Abs(step[1]), math.Abs(step[2]))); mx > 2 {
			scale = 2 / mx
		}
		for r := range th {
			th[r] -= scale * step[r]
		}
	}
	return nil, fmt.Errorf("no distribution on %d..%d has mean 0, variance %g and p(−1) = p(0)", lo, hi, v)
}

// solve3 solves c·x = m by Cramer's rule.
func solve3(c [3][3]float64, m [3]float64) ([3]float64, bool) {
	det := func(a [3][3]float64) float64 {
		return a[0][0]*(a[1][1]*a[2][2]-a[1][2]*a[2][1]) - a[0][1]*(a[1][0]*a[2][2]-a[1][2]*a[2][0]) + a[0][2]*(a[1][0]*a[2][1]-a[1][1]*a[2][0])
	}
	d := det(c)
	if math.Abs(d) < 1e-300 || math.IsNaN(d) {
		return [3]float64{}, false
	}
	var x [3]float64
	for col := 0; col < 3; col++ {
		a := c
		for r := 0; r < 3; r++ {
			a[r][col] = m[r]
		}
		x[col] = det(a) / d
	}
	return x, true
}

func (pt *PTable) fillIntervals() {
	for _, row := range pt.rows {
		acc := 0.0
		for k := range row {
			row[k].Lo = acc
			acc += row[k].P
			row[k].Hi = acc
		}
		row[len(row)-1].Hi = 1
	}
}

// Perturb returns the released value for a true count and its cell key.
func (pt *PTable) Perturb(count int64, cellKey uint32) int64 {
	if count <= 0 {
		return 0
	}
	i := count
	if i > int64(pt.IMax) {
		i = int64(pt.IMax)
	}
	row := pt.rows[i]
	u := float64(cellKey) / (1 << 32)
	k := sort.Search(len(row), func(k int) bool { return row[k].Hi > u })
	if k == len(row) {
		k = len(row) - 1
	}
	return count + int64(row[k].V)
}

// Entries returns every row of the table, ascending by i then j.
func (pt *PTable) Entries() []Entry {
	var out []Entry
	for _, row := range pt.rows {
		out = append(out, row...)
	}
	return out
}

// MaxDeviation is the largest |v| in the table.
func (pt *PTable) MaxDeviation() int {
	d := 0
	for _, e := range pt.Entries() {
		d = max(d, e.V, -e.V)
	}
	return d
}

var csvHeader = []string{"i", "j", "p", "v", "p_int_lb", "p_int_ub"}

// WriteCSV writes the table in the layout of the sdcTools ptable package.
func (pt *PTable) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return err
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', 17, 64) }
	for _, e := range pt.Entries() {
		if err := cw.Write([]string{strconv.Itoa(e.I), strconv.Itoa(e.J), f(e.P), strconv.Itoa(e.V), f(e.Lo), f(e.Hi)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// Hash identifies the table's content, for release metadata.
func (pt *PTable) Hash() string {
	var b strings.Builder
	if err := pt.WriteCSV(&b); err != nil {
		return ""
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8])
}

// LoadPTableCSV reads a table in the sdcTools ptable layout (columns i, j, p, v, p_int_lb,
// p_int_ub, in any order; other columns ignored). Every count from 0 to the largest i must
// have a row whose probabilities sum to 1, whose intervals tile [0, 1), with j = i + v ≥ 0.
func LoadPTableCSV(r io.Reader, name string) (*PTable, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: read header: %w", name, err)
	}
	idx := map[string]int{}
	for k, h := range header {
		idx[strings.Trim(strings.TrimSpace(h), `"`)] = k
	}
	for _, c := range csvHeader {
		if _, ok := idx[c]; !ok {
			return nil, fmt.Errorf("%s:1: missing column %q: expected columns %s", name, c, strings.Join(csvHeader, ", "))
		}
	}
	byI := map[int][]Entry{}
	imax := -1
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		get := func(c string) string {
			if k := idx[c]; k < len(rec) {
				return strings.TrimSpace(rec[k])
			}
			return ""
		}
		var e Entry
		var errs []error
		atoi := func(c string) int {
			v, err := strconv.Atoi(get(c))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a whole number", c, get(c)))
			}
			return v
		}
		atof := func(c string) float64 {
			v, err := strconv.ParseFloat(get(c), 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a number", c, get(c)))
			}
			return v
		}
		e.I, e.J, e.P, e.V, e.Lo, e.Hi = atoi("i"), atoi("j"), atof("p"), atoi("v"), atof("p_int_lb"), atof("p_int_ub")
		if len(errs) > 0 {
			return nil, fmt.Errorf("%s:%d: %w", name, line, errors.Join(errs...))
		}
		switch {
		case e.I < 0 || e.J < 0:
			return nil, fmt.Errorf("%s:%d: i=%d j=%d: expected counts of zero or more", name, line, e.I, e.J)
		case e.J != e.I+e.V:
			return nil, fmt.Errorf("%s:%d: j=%d is not i+v=%d", name, line, e.J, e.I+e.V)
		case e.P < 0 || e.P > 1:
			return nil, fmt.Errorf("%s:%d: p=%g: expected a probability", name, line, e.P)
		}
		byI[e.I] = append(byI[e.I], e)
		imax = max(imax, e.I)
	}
	if imax < 1 {
		return nil, fmt.Errorf("%s: no rows for counts above zero", name)
	}
	pt := &PTable{IMax: imax, rows: make([][]Entry, imax+1)}
	for i := 0; i <= imax; i++ {
		row := byI[i]
		if len(row) == 0 {
			return nil, fmt.Errorf("%s: no rows for i=%d: expected every count from 0 to %d", name, i, imax)
		}
		sort.Slice(row, func(a, b int) bool { return row[a].J < row[b].J })
		sum, prev := 0.0, 0.0
		for _, e := range row {
			if math.Abs(e.Lo-prev) > 1e-9 || e.Hi < e.Lo {
				return nil, fmt.Errorf("%s: i=%d j=%d: interval [%g, %g) does not follow %g", name, i, e.J, e.Lo, e.Hi, prev)
			}
			sum += e.P
			prev = e.Hi
		}
		if math.Abs(sum-1) > 1e-6 || math.Abs(prev-1) > 1e-6 {
			return nil, fmt.Errorf("%s: i=%d: probabilities sum to %g: expected 1", name, i, sum)
		}
		pt.rows[i] = row
	}
	pt.D = pt.MaxDeviation()
	var mean, sq float64
	for _, e := range pt.rows[imax] {
		mean += e.P * float64(e.V)
		sq += e.P * float64(e.V*e.V)
	}
	pt.V = sq - mean*mean
	return pt, nil
}
