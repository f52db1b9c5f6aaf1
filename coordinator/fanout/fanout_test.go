package fanout

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/samsyn/samsyn/coordinator/nodeclient"
)

// fakeNode shows failure modes a real node cannot be made to show on demand.
type fakeNode struct {
	calls atomic.Int32
	get   func(ctx context.Context, call int32) error
}

func (f *fakeNode) Get(ctx context.Context, _ []byte) (*nodeclient.Release, error) {
	if err := f.get(ctx, f.calls.Add(1)); err != nil {
		return nil, err
	}
	return &nodeclient.Release{}, nil
}

func ticket() ([]byte, error) { return []byte("t"), nil }

func TestRetriesOnlyTransientFailures(t *testing.T) {
	flaky := &fakeNode{get: func(_ context.Context, call int32) error {
		if call < 3 {
			return status.Error(codes.Unavailable, "connection refused")
		}
		return nil
	}}
	refusing := &fakeNode{get: func(context.Context, int32) error { return status.Error(codes.PermissionDenied, "expired") }}
	out := Run(context.Background(), []Target{{"a", flaky, ticket}, {"b", refusing, ticket}}, Options{Retries: 3, Backoff: time.Millisecond})
	if out[0].Err != nil || out[0].Attempts != 3 {
		t.Fatalf("flaky node: %+v", out[0])
	}
	if out[1].Err == nil || out[1].Attempts != 1 || refusing.calls.Load() != 1 {
		t.Fatalf("a refusal was retried: %+v", out[1])
	}
}

func TestAHangingNodeMeetsItsDeadline(t *testing.T) {
	hanging := &fakeNode{get: func(ctx context.Context, _ int32) error { <-ctx.Done(); return ctx.Err() }}
	fast := &fakeNode{get: func(context.Context, int32) error { return nil }}
	start := time.Now()
	out := Run(context.Background(), []Target{{"slow", hanging, ticket}, {"fast", fast, ticket}}, Options{NodeTimeout: 50 * time.Millisecond})
	if !errors.Is(out[0].Err, context.DeadlineExceeded) || out[1].Err != nil {
		t.Fatalf("outcomes %+v", out)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("the fan-out waited past the node deadline")
	}
}

func TestFailFastStopsTheOthers(t *testing.T) {
	broken := &fakeNode{get: func(context.Context, int32) error { return status.Error(codes.PermissionDenied, "no") }}
	hanging := &fakeNode{get: func(ctx context.Context, _ int32) error { <-ctx.Done(); return ctx.Err() }}
	start := time.Now()
	out := Run(context.Background(), []Target{{"broken", broken, ticket}, {"slow", hanging, ticket}}, Options{NodeTimeout: 10 * time.Second, FailFast: true})
	if out[1].Err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("fail-fast did not stop the hanging node: %+v", out)
	}
}

func TestEveryAttemptGetsAFreshTicket(t *testing.T) {
	var tickets atomic.Int32
	flaky := &fakeNode{get: func(_ context.Context, call int32) error {
		if call == 1 {
			return status.Error(codes.Unavailable, "down")
		}
		return nil
	}}
	Run(context.Background(), []Target{{"a", flaky, func() ([]byte, error) { tickets.Add(1); return []byte("t"), nil }}}, Options{Retries: 1, Backoff: time.Millisecond})
	if tickets.Load() != 2 {
		t.Fatalf("%d tickets for 2 attempts", tickets.Load())
	}
}
