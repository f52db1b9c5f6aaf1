package disclosure

import (
	"fmt"
	"testing"
)

// Record keys depend on the node secret (another secret gives other keys) and spread evenly
// over 0..2^32-1 (each of 16 bands of equal width holds its share, within a chi-square bound).
// That DuckDB's md5_number computes the very same keys inside the node's statement is
// TestTheNodesAggregateAgreesWithAPlainOneAndGoRecordKeys (node/executor).
func TestRecordKeysAreKeyedAndSpread(t *testing.T) {
	a := []byte("a node secret of some length, 0123456789")
	b := []byte("another node's secret, 0123456789abcdef")
	const n = 16000
	var bands [16]int
	same := 0
	for i := 0; i < n; i++ {
		pk := fmt.Sprintf("%032x", i*7919)
		k := RecordKey(a, pk)
		if k == RecordKey(b, pk) {
			same++
		}
		bands[k>>28]++
	}
	if same > 2 {
		t.Fatalf("%d of %d keys are the same under another secret", same, n)
	}
	chi := 0.0
	for _, c := range bands {
		d := float64(c) - n/16.0
		chi += d * d / (n / 16.0)
	}
	if chi > 37.7 { // 15 degrees of freedom, p = 0.001
		t.Fatalf("record keys are not spread evenly: chi-square %.1f over %v", chi, bands)
	}
	if RecordKeySQLKey(a) == RecordKeySQLKey(b) || len(RecordKeySQLKey(a)) != 64 {
		t.Fatal("the SQL key is not a 64-character function of the secret")
	}
}

func BenchmarkRecordKey(b *testing.B) {
	secret := []byte("a node secret of some length, 0123456789")
	pk := "0123456789abcdef0123456789abcdef"
	for i := 0; i < b.N; i++ {
		RecordKey(secret, pk)
	}
}
