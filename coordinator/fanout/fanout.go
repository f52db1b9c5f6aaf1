package fanout

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/samsyn/samsyn/coordinator/nodeclient"
)

// Node is what fan-out needs of a node client.
type Node interface {
	Get(ctx context.Context, ticket []byte) (*nodeclient.Release, error)
}

var _ Node = (*nodeclient.Client)(nil)

// Target is one node and the ticket for it. Ticket is called for every attempt, so each
// attempt carries a fresh nonce.
type Target struct {
	Association string
	Node        Node
	Ticket      func() ([]byte, error)
}

// Outcome is what one node answered.
type Outcome struct {
	Association string
	Release     *nodeclient.Release
	Err         error
	Attempts    int
	Elapsed     time.Duration
}

// Options tune a fan-out.
type Options struct {
	NodeTimeout time.Duration // per attempt; 10 s when zero
	Retries     int           // extra attempts for transient errors
	Backoff     time.Duration // first backoff, doubled per retry; 100 ms when zero
	FailFast    bool          // stop every other node at the first permanent failure
	Transient   func(error) bool
	// Progress, if set, is called as each node starts an attempt and when it finishes.
	Progress func(association, state string, attempt int, err error)
	// Done, if set, is called with each node's outcome as soon as that node is finished, from
	// the node's goroutine: the caller stores each answer as it arrives, so a crash loses
	// none that came in. It may take over the outcome's Release (and set it to nil).
	Done func(o *Outcome)
}

// Run asks every target in parallel and returns one outcome per target, in target order.
func Run(ctx context.Context, targets []Target, o Options) []Outcome {
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = 10 * time.Second
	}
	if o.Backoff <= 0 {
		o.Backoff = 100 * time.Millisecond
	}
	if o.Transient == nil {
		o.Transient = nodeclient.Transient
	}
	if o.Progress == nil {
		o.Progress = func(string, string, int, error) {}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make([]Outcome, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = ask(ctx, t, o)
			if o.Done != nil {
				o.Done(&out[i])
			}
			if out[i].Err != nil && o.FailFast && !errors.Is(out[i].Err, context.Canceled) {
				cancel()
			}
		}()
	}
	wg.Wait()
	return out
}

func ask(ctx context.Context, t Target, o Options) Outcome {
	start := time.Now()
	res := Outcome{Association: t.Association}
	backoff := o.Backoff
	for attempt := 1; ; attempt++ {
		res.Attempts = attempt
		o.Progress(t.Association, "running", attempt, nil)
		ticket, err := t.Ticket()
		if err != nil {
			res.Err = err
			break
		}
		actx, cancel := context.WithTimeout(ctx, o.NodeTimeout)
		rel, err := t.Node.Get(actx, ticket)
		cancel()
		if err == nil {
			res.Release, res.Err = rel, nil
			break
		}
		res.Err = err
		if ctx.Err() != nil || attempt > o.Retries || !o.Transient(err) {
			break
		}
		o.Progress(t.Association, "retrying", attempt, err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			res.Err = ctx.Err()
			res.Elapsed = time.Since(start)
			o.Progress(t.Association, "failed", attempt, res.Err)
			return res
		}
		backoff *= 2
	}
	res.Elapsed = time.Since(start)
	if res.Err != nil {
		o.Progress(t.Association, "failed", res.Attempts, res.Err)
	} else {
		o.Progress(t.Association, "done", res.Attempts, nil)
	}
	return res
}
