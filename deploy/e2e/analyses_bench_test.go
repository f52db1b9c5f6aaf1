package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/study"
)

// BenchmarkLogisticRegressionEightNodes runs what_works over the demo federation (eight
// nodes, 1,900 synthetic participants, real plugins, real mTLS): submit, eight approvals,
// every IRLS step as a masked fan-out, the secure sums, the checks, the release.
func BenchmarkLogisticRegressionEightNodes(b *testing.B) {
	f := startInProc(b, 0)
	req := &study.Request{Title: "bench", Purpose: "bench", OnNodeFailure: study.OnFailureFail,
		Queries: []study.QueryReq{{ID: "what_works", Params: map[string]string{"from": "2020-04-01", "to": "2022-09-30"}}}}
	samples := make([]time.Duration, 0, b.N)
	iterations := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		s, err := f.coord.Submit(context.Background(), req, "eva")
		if err != nil {
			b.Fatal(err)
		}
		f.approveAll(b, s)
		if got := f.wait(b, s.ID); got.State != study.Released {
			b.Fatalf("study %s", got.State)
		}
		samples = append(samples, time.Since(start))
		res, err := f.store.Results(context.Background(), s.ID)
		if err != nil || len(res) != 1 {
			b.Fatalf("results %d: %v", len(res), err)
		}
		var ch coordinator.Checks
		json.Unmarshal(res[0].Checks, &ch)
		iterations = ch.Model.Iterations
	}
	b.StopTimer()
	var total time.Duration
	for _, s := range samples {
		total += s
	}
	mean := total / time.Duration(len(samples))
	b.ReportMetric(mean.Seconds(), "s/regression")
	b.ReportMetric(float64(iterations), "iterations")
	b.ReportMetric(float64(mean.Milliseconds())/float64(iterations), "ms/iteration")
}
