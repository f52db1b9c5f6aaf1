package analysis_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"

	"github.com/samsyn/samsyn/analysis"
	"github.com/samsyn/samsyn/analysis/analysistest"
	"github.com/samsyn/samsyn/analysis/km"
	"github.com/samsyn/samsyn/analysis/logit"
	"github.com/samsyn/samsyn/analysis/pathways"
)

func kmRows(t *testing.T) (*arrow.Schema, arrow.Record) {
	sc := arrow.NewSchema([]arrow.Field{
		{Name: analysis.ColRecordKey, Type: arrow.PrimitiveTypes.Int64},
		{Name: analysis.ColParticipant, Type: arrow.PrimitiveTypes.Int64},
		{Name: "method", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "months", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "event", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	// key, method, months, event
	rows := []struct {
		key    int64
		method string
		months int64
		event  int64
	}{
		{10, "SE", 0, 1}, {20, "SE", 0, 1}, {30, "SE", 2, 0}, {40, "SE", 5, 1}, // 5 > last month 3: censored at 3
		{50, "IPS", 1, 1}, {60, "IPS", 3, 0}, {70, "ODD", 1, 1},
	}
	for i, r := range rows {
		b.Field(0).(*array.Int64Builder).Append(r.key)
		b.Field(1).(*array.Int64Builder).Append(int64(i + 1))
		b.Field(2).(*array.StringBuilder).Append(r.method)
		b.Field(3).(*array.Int64Builder).Append(r.months)
		b.Field(4).(*array.Int64Builder).Append(r.event)
	}
	// a row with no time is left out
	b.Field(0).(*array.Int64Builder).Append(80)
	b.Field(1).(*array.Int64Builder).Append(8)
	b.Field(2).(*array.StringBuilder).Append("SE")
	b.Field(3).(*array.Int64Builder).AppendNull()
	b.Field(4).(*array.Int64Builder).Append(1)
	return sc, b.NewRecord()
}

func kmRequest() *analysis.Request {
	return &analysis.Request{Analysis: "time_to_work", Kind: analysis.KindCells,
		Options: map[string]string{"time": "months", "event": "event"},
		Dimensions: []analysis.Dimension{
			{Name: "method", Domain: []string{"SE", "IPS"}},
			{Name: "month", Domain: []string{"0", "1", "2", "3"}},
			{Name: "status", Domain: []string{km.StatusEvent, km.StatusCensored}},
		}}
}

func cellsOf(res *analysis.Result) map[string][2]int64 {
	out := map[string][2]int64{}
	for _, c := range res.Cells {
		out[strings.Join(c.Labels, "/")] = [2]int64{c.N, int64(c.KeySum)}
	}
	return out
}

func TestKaplanMeierCountsOverGRPC(t *testing.T) {
	sc, rec := kmRows(t)
	defer rec.Release()
	// The ODD method is not in the request's domain: the plugin reports it as Other, since
	// the node maps codes before streaming; here it arrives raw, so the node's shape check
	// must refuse it.
	if _, err := analysistest.Run(t, km.Analysis{}, kmRequest(), sc, rec); !errors.Is(err, analysis.ErrShape) {
		t.Fatalf("an undeclared label passed the shape check: %v", err)
	}
	req := kmRequest()
	req.Dimensions[0].Domain = append(req.Dimensions[0].Domain, "ODD")
	res, err := analysistest.Run(t, km.Analysis{}, req, sc, rec)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]int64{ // written out by hand from the rows above
		"SE/0/event": {2, 30}, "SE/2/censored": {1, 30}, "SE/3/censored": {1, 40},
		"IPS/1/event": {1, 50}, "IPS/3/censored": {1, 60}, "ODD/1/event": {1, 70},
	}
	got := cellsOf(res)
	if len(got) != len(want) {
		t.Fatalf("cells %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %v, want %v", k, got[k], w)
		}
	}
}

func TestPathwaysOrdersEachParticipantsEpisodes(t *testing.T) {
	sc := arrow.NewSchema([]arrow.Field{
		{Name: analysis.ColRecordKey, Type: arrow.PrimitiveTypes.Int64},
		{Name: analysis.ColParticipant, Type: arrow.PrimitiveTypes.Int64},
		{Name: "method", Type: arrow.BinaryTypes.String},
		{Name: "start_date", Type: arrow.FixedWidthTypes.Date32},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	add := func(key, id int64, m string, day int32) {
		b.Field(0).(*array.Int64Builder).Append(key)
		b.Field(1).(*array.Int64Builder).Append(id)
		b.Field(2).(*array.StringBuilder).Append(m)
		b.Field(3).(*array.Date32Builder).Append(arrow.Date32(day))
	}
	add(7, 1, "IPS", 300) // participant 1: PRE_REHAB (day 100), then IPS (day 300)
	add(7, 1, "PRE_REHAB", 100)
	add(9, 2, "SE", 50) // participant 2: SE alone
	add(5, 3, "PRE_REHAB", 10)
	add(5, 3, "SE", 20)
	add(5, 3, "IPS", 30) // a third episode does not count
	rec := b.NewRecord()
	defer rec.Release()
	dom := []string{"SE", "IPS", "PRE_REHAB"}
	req := &analysis.Request{Analysis: "pathways", Kind: analysis.KindCells,
		Options:    map[string]string{"method": "method", "start": "start_date"},
		Dimensions: []analysis.Dimension{{Name: "first_method", Domain: dom}, {Name: "second_method", Domain: append(slices.Clone(dom), pathways.NoSecond)}}}
	res, err := analysistest.Run(t, pathways.Analysis{}, req, sc, rec)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]int64{"PRE_REHAB/IPS": {1, 7}, "SE/none": {1, 9}, "PRE_REHAB/SE": {1, 5}}
	got := cellsOf(res)
	if len(got) != len(want) {
		t.Fatalf("cells %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %v, want %v", k, got[k], w)
		}
	}
}

func TestLogitStatisticsOverGRPCMatchTheRows(t *testing.T) {
	sc := arrow.NewSchema([]arrow.Field{
		{Name: analysis.ColRecordKey, Type: arrow.PrimitiveTypes.Int64},
		{Name: analysis.ColParticipant, Type: arrow.PrimitiveTypes.Int64},
		{Name: "g", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "y", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	data := []struct {
		g string
		y int64
	}{{"a", 1}, {"a", 0}, {"b", 1}, {"b", 1}, {"b", 0}, {"c", 1}}
	for i, d := range data {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		b.Field(1).(*array.Int64Builder).Append(int64(i))
		b.Field(2).(*array.StringBuilder).Append(d.g)
		b.Field(3).(*array.Int64Builder).Append(d.y)
	}
	rec := b.NewRecord()
	defer rec.Release()
	req := &analysis.Request{Analysis: "m", Kind: analysis.KindGLM, Outcome: "y",
		Predictors: []analysis.Predictor{{Name: "g", Levels: []string{"a", "b"}}}, Coefficients: []float64{0, 0}}
	res, err := analysistest.Run(t, logit.Analysis{}, req, sc, rec)
	if err != nil {
		t.Fatal(err)
	}
	g := res.GLM
	// At β = 0 every weight is 1/4. "c" is not a level: five complete cases, two in a, three in b.
	if g.N != 5 || g.XtWX[0] != 1.25 || g.XtWX[1] != 0.75 || g.XtWX[3] != 0.75 {
		t.Fatalf("X'WX %v n %d", g.XtWX, g.N)
	}
	// w·z = y - 1/2 at β = 0: intercept 3 - 2.5, b column 2 - 1.5.
	if g.XtWz[0] != 0.5 || g.XtWz[1] != 0.5 {
		t.Fatalf("X'Wz %v", g.XtWz)
	}
	// Iterating from there reaches the saturated fit: P(y|a) = 1/2, P(y|b) = 2/3.
	beta := []float64{0, 0}
	for it := 0; it < 25; it++ {
		req.Coefficients = beta
		res, err := logit.Analysis{}.Run(context.Background(), req, mustReader(t, sc, rec))
		if err != nil {
			t.Fatal(err)
		}
		beta, _, err = logit.Step(*res.GLM)
		if err != nil {
			t.Fatal(err)
		}
	}
	if d := beta[0]; d > 1e-12 || d < -1e-12 {
		t.Errorf("intercept %v, want logit(1/2) = 0", d)
	}
	if d := beta[1] - 0.6931471805599453; d > 1e-12 || d < -1e-12 { // logit(2/3) = ln 2
		t.Errorf("b coefficient %v, want ln 2", beta[1])
	}
}

func mustReader(t *testing.T, sc *arrow.Schema, recs ...arrow.Record) array.RecordReader {
	r, err := array.NewRecordReader(sc, recs)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestInvertAgainstTheIdentity(t *testing.T) {
	a := []float64{4, 1, 0.5, 1, 3, 0.25, 0.5, 0.25, 2}
	inv, err := logit.Invert(a, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		for j := 0; j < 3; j++ {
			s := 0.0
			for k := 0; k < 3; k++ {
				s += a[i*3+k] * inv[k*3+j]
			}
			want := 0.0
			if i == j {
				want = 1
			}
			if d := s - want; d > 1e-12 || d < -1e-12 {
				t.Errorf("(A·A⁻¹)[%d][%d] = %v", i, j, s)
			}
		}
	}
	if _, err := logit.Invert([]float64{1, 1, 1, 1}, 2); !errors.Is(err, logit.ErrSingular) {
		t.Errorf("a singular matrix inverted: %v", err)
	}
}

func TestCheckRefusesAnswersOutsideTheShape(t *testing.T) {
	req := kmRequest()
	for name, res := range map[string]*analysis.Result{
		"too many labels": {Cells: []analysis.Cell{{Labels: []string{"SE", "0", "event", "x"}, N: 1}}},
		"unknown label":   {Cells: []analysis.Cell{{Labels: []string{"SE", "9", "event"}, N: 1}}},
		"twice":           {Cells: []analysis.Cell{{Labels: []string{"SE", "0", "event"}, N: 1}, {Labels: []string{"SE", "0", "event"}, N: 1}}},
		"more than rows":  {Cells: []analysis.Cell{{Labels: []string{"SE", "0", "event"}, N: 11}}},
		"negative":        {Cells: []analysis.Cell{{Labels: []string{"SE", "0", "event"}, N: -1}}},
		"model stats":     {GLM: &analysis.GLMStats{}},
	} {
		if err := req.Check(res, 10); !errors.Is(err, analysis.ErrShape) {
			t.Errorf("%s: %v", name, err)
		}
	}
	glm := &analysis.Request{Kind: analysis.KindGLM, Outcome: "y", Predictors: []analysis.Predictor{{Name: "g", Levels: []string{"a", "b"}}}}
	for name, g := range map[string]*analysis.GLMStats{
		"short":         {N: 1, XtWX: []float64{1, 0, 0}, XtWz: []float64{0, 0}},
		"asymmetric":    {N: 1, XtWX: []float64{1, 2, 3, 1}, XtWz: []float64{0, 0}},
		"more than all": {N: 11, XtWX: []float64{1, 0, 0, 1}, XtWz: []float64{0, 0}},
	} {
		if err := glm.Check(&analysis.Result{GLM: g}, 10); !errors.Is(err, analysis.ErrShape) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
