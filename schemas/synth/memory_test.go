package synth

import (
	"context"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// heapPeak samples the live-and-unswept heap while f runs.
func heapPeak(f func()) uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	stop := make(chan struct{})
	done := make(chan uint64)
	go func() {
		peak := read()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- max(peak, read())
				return
			case <-tick.C:
				peak = max(peak, read())
			}
		}
	}()
	f()
	close(stop)
	return <-done
}

// TestMemoryStaysBounded writes 200,000 participants of one association and checks that
// the heap never holds more than a small, fixed amount: nothing may grow with the number
// of participants.
func TestMemoryStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 200,000 participants twice (about 3 s); skipped under -short")
	}
	const limit = 64 << 20
	for _, format := range Formats {
		t.Run(format, func(t *testing.T) {
			n := 200_000
			if raceEnabled {
				n = 50_000 // the race detector makes every row ten times slower; the bound is the same
			}
			dir := t.TempDir()
			runtime.GC()
			var sum Summary
			var err error
			peak := heapPeak(func() {
				sum, err = Write(context.Background(), dir, Options{PerAssociation: n, Seed: 1, Format: format, Associations: []string{"hbs"}})
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := sum.Rows("participant"); got != int64(n) {
				t.Fatalf("wrote %d participants, want %d", got, n)
			}
			t.Logf("%s: %d participants, %d follow-ups; peak heap %.1f MB", format, n, sum.Rows("followup"), float64(peak)/(1<<20))
			if peak > limit {
				t.Fatalf("peak heap %.1f MB, want under %d MB", float64(peak)/(1<<20), limit>>20)
			}
		})
	}
}

// BenchmarkWrite writes 100,000 participants of one association.
func BenchmarkWrite(b *testing.B) {
	for _, format := range Formats {
		b.Run(format, func(b *testing.B) {
			const n = 100_000
			var rows int64
			for i := 0; i < b.N; i++ {
				dir := b.TempDir()
				sum, err := Write(context.Background(), dir, Options{PerAssociation: n, Seed: uint64(i + 1), Format: format, Associations: []string{"hbs"}})
				if err != nil {
					b.Fatal(err)
				}
				for _, f := range sum.Files {
					rows += f.Rows
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "participants/s")
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
