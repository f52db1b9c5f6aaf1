package disclosure

import (
	"bytes"
	"math"
	"testing"
)

func TestMonotonePTableKeepsSmallCountsFromMovingDownMoreThanStaying(t *testing.T) {
	for _, c := range []struct {
		d int
		v float64
	}{{2, 1}, {2, 1.2}, {3, 1}, {4, 2}} {
		plain, err := NewPTable(c.d, c.v)
		if err != nil {
			t.Fatal(err)
		}
		mono, err := NewMonotonePTable(c.d, c.v)
		if err != nil {
			t.Fatalf("D=%d V=%g: %v", c.d, c.v, err)
		}
		changed := 0
		for i := 1; i <= mono.IMax; i++ {
			row := mono.rows[i]
			var sum, mean, sq float64
			p := map[int]float64{}
			for _, e := range row {
				sum += e.P
				mean += e.P * float64(e.V)
				sq += e.P * float64(e.V*e.V)
				p[e.V] = e.P
				if e.P < 0 || e.J < 0 {
					t.Fatalf("D=%d row %d: p=%g j=%d", c.d, i, e.P, e.J)
				}
			}
			if math.Abs(sum-1) > 1e-9 || math.Abs(mean) > 1e-9 || math.Abs(sq-c.v) > 1e-9 {
				t.Fatalf("D=%d V=%g row %d: sum %g mean %g variance %g", c.d, c.v, i, sum, mean, sq)
			}
			if p[-1] > p[0]+1e-12 {
				t.Fatalf("D=%d V=%g row %d: p(i→i−1) = %g > p(i→i) = %g", c.d, c.v, i, p[-1], p[0])
			}
			for k, e := range row {
				if math.Abs(e.P-plain.rows[i][k].P) > 1e-9 {
					changed++
					break
				}
			}
		}
		if c.d == 2 && changed == 0 {
			t.Fatal("D=2 V=1: the monotone table equals the plain one, whose row 1 is not monotone")
		}
	}
	// Tied at p(−1) = p(0), row 1 of D=3 can reach a variance of 12/7 at most: a monotone
	// table that keeps V=2 does not exist, and is refused rather than built with less noise.
	if _, err := NewMonotonePTable(3, 2); err == nil {
		t.Fatal("D=3 V=2: a monotone table was built that cannot keep its variance")
	}
	// The closed form for D=2, V=1, row 1: p(−1) = p(0) = 3/8, p(+1) = p(+2) = 1/8.
	mono, _ := NewMonotonePTable(2, 1)
	for k, want := range []float64{3.0 / 8, 3.0 / 8, 1.0 / 8, 1.0 / 8} {
		if got := mono.rows[1][k].P; math.Abs(got-want) > 1e-10 {
			t.Fatalf("row 1, v=%d: %g, want %g", mono.rows[1][k].V, got, want)
		}
	}
}

// The monotone table travels in the sdcTools layout (i, j, p, v, p_int_lb, p_int_ub) and
// reads back as the same table.
func TestMonotonePTableRoundTripsThroughThePackageLayout(t *testing.T) {
	mono, err := NewMonotonePTable(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := mono.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := LoadPTableCSV(bytes.NewReader(buf.Bytes()), "mono.csv")
	if err != nil {
		t.Fatal(err)
	}
	if back.Hash() != mono.Hash() || back.D != 2 || math.Abs(back.V-1) > 1e-9 {
		t.Fatalf("round trip: D=%d V=%g", back.D, back.V)
	}
}

func TestPolicyOffersTheMonotoneTable(t *testing.T) {
	p := Defaults()
	p.Monotone = true
	pt := p.PTable()
	if pt == nil || !pt.Monotone {
		t.Fatal("a monotone policy has no monotone table")
	}
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	if p.Params() == Defaults().Params() {
		t.Fatal("the release parameters do not say the table is monotone")
	}
}

func TestAnImpossibleMonotonePolicyIsRefusedWithItsReason(t *testing.T) {
	p := Defaults()
	p.Monotone, p.MaxDeviation, p.Variance = true, 3, 2
	err := p.Check()
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("monotone")) {
		t.Fatalf("check: %v", err)
	}
}
