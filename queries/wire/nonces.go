package wire

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultMaxNonces bounds a MemoryNonces made with a limit of zero or less.
const DefaultMaxNonces = 1_000_000

// ErrNonceStoreFull is returned by MemoryNonces.Remember when it holds its limit of live
// nonces. Verify reports it as ErrNonceStore: the ticket is refused, not accepted unchecked.
var ErrNonceStoreFull = errors.New("nonce store full")

// MemoryNonces is a NonceStore in memory, for a single node process. A nonce is remembered
// until its time has passed; expired nonces are pruned as the store grows. It is bounded: it
// refuses a new nonce rather than grow beyond its limit. A restart forgets every nonce, so a
// ticket accepted just before a restart could be used once more until it expires (at most
// MaxLifetime later); where that matters, use a persistent NonceStore.
type MemoryNonces struct {
	mu        sync.Mutex
	seen      map[string]time.Time
	limit     int
	nextPrune int
	now       func() time.Time
}

var _ NonceStore = (*MemoryNonces)(nil)

// NewMemoryNonces returns an empty store holding at most limit live nonces
// (DefaultMaxNonces if limit <= 0).
func NewMemoryNonces(limit int) *MemoryNonces {
	if limit <= 0 {
		limit = DefaultMaxNonces
	}
	return &MemoryNonces{seen: make(map[string]time.Time), limit: limit, nextPrune: pruneFloor, now: time.Now}
}

const pruneFloor = 1024

// Remember implements NonceStore. A nonce still held is a replay, whatever until says: only
// pruning forgets a nonce, and only after its until has passed.
func (m *MemoryNonces) Remember(ctx context.Context, nonce []byte, until time.Time) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := string(nonce)
	now := m.now()
	if _, ok := m.seen[key]; ok {
		return false, nil
	}
	if len(m.seen) >= m.nextPrune || len(m.seen) >= m.limit {
		m.prune(now)
	}
	if len(m.seen) >= m.limit {
		return false, fmt.Errorf("%w: %d live nonces", ErrNonceStoreFull, len(m.seen))
	}
	m.seen[key] = until
	return true, nil
}

// Len reports how many nonces the store holds, expired ones not yet pruned included.
func (m *MemoryNonces) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.seen)
}

// prune drops expired nonces and sets the size at which to prune again, so pruning costs
// amortised constant time per Remember.
func (m *MemoryNonces) prune(now time.Time) {
	for k, exp := range m.seen {
		if !now.Before(exp) {
			delete(m.seen, k)
		}
	}
	m.nextPrune = max(pruneFloor, 2*len(m.seen))
}
