package disclosure

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
)

// SurvivalThreshold is the fewest participants at risk a released interval of a survival
// table may have (as ACRO's survival_safe_threshold).
const SurvivalThreshold = 10

// Columns of a released survival table, after the strata and ColMonth.
const (
	ColMonth    = "month"    // the interval's first month since the start
	ColMonthTo  = "month_to" // its last month (the last interval pools the tail)
	ColEvents   = "events"
	ColCensored = "censored"
	ColSurvival = "survival" // Kaplan–Meier estimate of still not having had the event at the interval's end
	ColLower    = "lower"    // 95 % interval, log-log transformed, Greenwood variance
	ColUpper    = "upper"
)

// SurvivalMeasures are the measure columns of a released survival table, in order.
var SurvivalMeasures = []string{ColMonthTo, ColEvents, ColCensored, ColSurvival, ColLower, ColUpper}

// ProtectSurvival releases Kaplan–Meier curves from the pooled, perturbed counts of a
// survival layout (dimensions: the strata, then the month and the status, whose domain is
// event, censored). For each stratum the numbers at risk are the perturbed counts of the
// months from there on; months are released one by one while at least threshold are at risk,
// and the months after the last such month are pooled into that last interval, so every
// released interval has at least threshold at risk. A stratum with fewer than threshold in
// all is suppressed whole (one row, ColSuppressed). Each row's ColN is the number at risk.
//
// With cover, a stratum only associations missing from the result could fill is one row
// marked missing (never a curve of nobody), and every row says how many of the associations
// that could fill its stratum are in the result.
func ProtectSurvival(mem memory.Allocator, l *Layout, pooled []uint64, threshold int, cover Coverage) (arrow.Record, Report, error) {
	var rep Report
	nd := len(l.spec.Dimensions)
	if nd < 2 || len(l.spec.Dimensions[nd-1].Domain) != 2 || !l.spec.Totals {
		return nil, rep, errors.New("survival: the layout needs strata, month and status dimensions, with totals")
	}
	if len(pooled) != l.Len() {
		return nil, rep, fmt.Errorf("survival: %d values for a layout of %d", len(pooled), l.Len())
	}
	months := l.spec.Dimensions[nd-2].Domain
	status := l.spec.Dimensions[nd-1].Domain // event, censored
	strataDomains := make([][]string, nd-2)
	fields := make([]arrow.Field, 0, nd+len(SurvivalMeasures)+1)
	for i, d := range l.spec.Dimensions[:nd-2] {
		strataDomains[i] = append(append([]string{}, d.Domain...), Other, Total)
		fields = append(fields, arrow.Field{Name: d.Name, Type: arrow.BinaryTypes.String})
	}
	fields = append(fields,
		arrow.Field{Name: ColMonth, Type: arrow.BinaryTypes.String},
		arrow.Field{Name: ColN, Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		arrow.Field{Name: ColSuppressed, Type: arrow.FixedWidthTypes.Boolean})
	for _, m := range SurvivalMeasures {
		fields = append(fields, arrow.Field{Name: m, Type: arrow.PrimitiveTypes.Float64, Nullable: true})
	}
	fields = append(fields,
		arrow.Field{Name: ColMissing, Type: arrow.FixedWidthTypes.Boolean},
		arrow.Field{Name: ColAssociations, Type: arrow.PrimitiveTypes.Int64})
	b := array.NewRecordBuilder(mem, arrow.NewSchema(fields, nil))
	defer b.Release()
	var bad error
	read := func(dims []string) int64 {
		n, _, ok := l.Count(pooled, dims)
		if !ok || n < 0 || n > maxPooledCount {
			bad = ErrNoise
		}
		return n
	}
	var present int64
	var missing bool
	emit := func(strata []string, month string, atRisk *int64, suppressed bool, vals []float64) {
		for i, s := range strata {
			b.Field(i).(*array.StringBuilder).Append(s)
		}
		k := len(strata)
		b.Field(k).(*array.StringBuilder).Append(month)
		if atRisk == nil {
			b.Field(k + 1).(*array.Int64Builder).AppendNull()
		} else {
			b.Field(k + 1).(*array.Int64Builder).Append(*atRisk)
		}
		b.Field(k + 2).(*array.BooleanBuilder).Append(suppressed)
		for j := range SurvivalMeasures {
			fb := b.Field(k + 3 + j).(*array.Float64Builder)
			if vals == nil || math.IsNaN(vals[j]) {
				fb.AppendNull()
			} else {
				fb.Append(vals[j])
			}
		}
		nm := k + 3 + len(SurvivalMeasures)
		b.Field(nm).(*array.BooleanBuilder).Append(missing)
		b.Field(nm + 1).(*array.Int64Builder).Append(present)
		rep.Cells++
	}
	z := 1.959963984540054
	strataList := [][]string{{}}
	if len(strataDomains) > 0 {
		strataList = nil
		forEachCombination(strataDomains, func(dims []string) { strataList = append(strataList, dims) })
	}
	for _, strata := range strataList {
		present, missing = -1, false
		if cover != nil {
			cell := map[string]string{l.spec.Dimensions[nd-2].Name: Total, l.spec.Dimensions[nd-1].Name: Total}
			for i, s := range strata {
				cell[l.spec.Dimensions[i].Name] = s
			}
			could, in := cover(cell)
			present = int64(in)
			if could == 0 {
				continue // no association could have anyone here (another association's row)
			}
			if in == 0 {
				missing = true
				rep.Missing++
				emit(strata, months[0], nil, false, nil)
				continue
			}
		}
		ev := make([]int64, len(months))
		ce := make([]int64, len(months))
		for m, month := range months {
			ev[m] = read(append(append([]string{}, strata...), month, status[0]))
			ce[m] = read(append(append([]string{}, strata...), month, status[1]))
		}
		if bad != nil {
			return nil, rep, bad
		}
		risk := make([]int64, len(months)+1)
		for m := len(months) - 1; m >= 0; m-- {
			risk[m] = risk[m+1] + ev[m] + ce[m]
		}
		isOther := false
		for _, s := range strata {
			isOther = isOther || s == Other
		}
		if risk[0] == 0 && isOther {
			continue // nobody outside the code lists: no row
		}
		if risk[0] > 0 {
			rep.NonEmpty++
		}
		if risk[0] < int64(threshold) {
			rep.Suppressed++
			if risk[0] > 0 {
				rep.SuppressedNonEmpty++
			}
			emit(strata, months[0], nil, true, nil)
			continue
		}
		last := 0
		for m := range months {
			if risk[m] >= int64(threshold) {
				last = m
			}
		}
		s, v := 1.0, 0.0
		for m := 0; m <= last; m++ {
			d, c, n := ev[m], ce[m], risk[m]
			to := m
			if m == last {
				d, c, to = 0, 0, len(months)-1
				for k := m; k < len(months); k++ {
					d, c = d+ev[k], c+ce[k]
				}
			}
			if d > 0 {
				s *= 1 - float64(d)/float64(n)
				if n > d {
					v += float64(d) / (float64(n) * float64(n-d))
				} else {
					v = math.NaN()
				}
			}
			lo, hi := s, s
			if s > 0 && s < 1 && !math.IsNaN(v) {
				se := math.Sqrt(v) / math.Abs(math.Log(s))
				lo = math.Exp(-math.Exp(math.Log(-math.Log(s)) + z*se))
				hi = math.Exp(-math.Exp(math.Log(-math.Log(s)) - z*se))
			} else if s == 0 || math.IsNaN(v) {
				lo, hi = math.NaN(), math.NaN()
			}
			atRisk := n
			emit(strata, months[m], &atRisk, false, []float64{float64(to), float64(d), float64(c), s, lo, hi})
		}
	}
	return b.NewRecord(), rep, nil
}

// MonthLabel is the label of a released interval: "3" or "12–36".
func MonthLabel(from string, to float64) string {
	if f, err := strconv.Atoi(from); err == nil && float64(f) != to {
		return from + "–" + strconv.Itoa(int(to))
	}
	return from
}
