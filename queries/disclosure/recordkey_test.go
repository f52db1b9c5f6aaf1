package disclosure

import (
	"fmt"
	"sync"
	"testing"
)

// The reusing keyer gives RecordKey's keys, also when used from many goroutines at once.
func TestRecordKeyerMatchesRecordKey(t *testing.T) {
	secret := []byte("a node secret of some length, 0123456789")
	k := NewRecordKeyer(secret)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				pk := fmt.Sprintf("%032x", i*7919+g)
				if got, want := k.Key(pk), RecordKey(secret, pk); got != want {
					t.Errorf("%s: %d, RecordKey says %d", pk, got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkRecordKey(b *testing.B) {
	secret := []byte("a node secret of some length, 0123456789")
	k := NewRecordKeyer(secret)
	pk := "0123456789abcdef0123456789abcdef"
	b.Run("new_hmac", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			RecordKey(secret, pk)
		}
	})
	b.Run("keyer", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			k.Key(pk)
		}
	})
}
