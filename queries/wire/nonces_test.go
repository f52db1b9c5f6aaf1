package wire

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestMemoryNonces(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := NewMemoryNonces(3)
	m.now = func() time.Time { return now }

	remember := func(n string, until time.Time) (bool, error) { return m.Remember(ctx, []byte(n), until) }
	if fresh, err := remember("a", now.Add(time.Minute)); !fresh || err != nil {
		t.Fatalf("first a: fresh=%v err=%v", fresh, err)
	}
	if fresh, err := remember("a", now.Add(time.Hour)); fresh || err != nil {
		t.Fatalf("second a: fresh=%v err=%v, want a replay", fresh, err)
	}
	for _, n := range []string{"b", "c"} {
		if fresh, err := remember(n, now.Add(2*time.Minute)); !fresh || err != nil {
			t.Fatalf("%s: fresh=%v err=%v", n, fresh, err)
		}
	}
	if _, err := remember("d", now.Add(time.Minute)); !errors.Is(err, ErrNonceStoreFull) {
		t.Fatalf("fourth live nonce: %v, want ErrNonceStoreFull", err)
	}

	now = now.Add(90 * time.Second) // a has expired, b and c have not
	if fresh, err := remember("d", now.Add(time.Minute)); !fresh || err != nil {
		t.Fatalf("d after a expired: fresh=%v err=%v", fresh, err)
	}
	if m.Len() != 3 {
		t.Fatalf("Len = %d after pruning, want 3", m.Len())
	}
	if fresh, _ := remember("b", now.Add(time.Minute)); fresh {
		t.Fatal("b was forgotten before it expired")
	}
}

func TestMemoryNoncesPrunesAsItGrows(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := NewMemoryNonces(0)
	m.now = func() time.Time { return now }
	for i := range 10 * pruneFloor {
		if _, err := m.Remember(ctx, []byte(fmt.Sprint(i)), now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
	}
	if m.Len() > 2*pruneFloor {
		t.Fatalf("Len = %d: expired nonces are not pruned", m.Len())
	}
}

func TestMemoryNoncesConcurrent(t *testing.T) {
	m := NewMemoryNonces(0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				ok, err := m.Remember(context.Background(), []byte(fmt.Sprint(i)), time.Now().Add(time.Minute))
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					mu.Lock()
					fresh++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if fresh != 100 {
		t.Fatalf("%d fresh nonces from 100 distinct ones remembered 8 times", fresh)
	}
}

func TestMemoryNoncesHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewMemoryNonces(0).Remember(ctx, []byte("n"), time.Now()); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}
