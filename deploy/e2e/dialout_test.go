package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/study"
)

// proxy forwards TCP connections to a target and can cut them all at once: a network drop
// between a dial-out node and the coordinator.
type proxy struct {
	addr     string
	target   string
	mu       sync.Mutex
	conns    []net.Conn
	accepted atomic.Int64
	bytes    atomic.Int64 // carried in either direction
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), target: target}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.copy(up, c) }()
			go func() { defer wg.Done(); p.copy(c, up) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut(); wg.Wait() })
	return p
}

func (p *proxy) copy(dst, src net.Conn) {
	_, _ = io.Copy(countingWriter{dst, &p.bytes}, src)
	dst.Close()
	src.Close()
}

// cut closes every connection carried so far; new ones are still accepted.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// releaseAll runs every catalog query over f and returns the released tables by query.
func releaseAll(t *testing.T, f *inproc, during func(s *study.Study)) map[string][]byte {
	t.Helper()
	s := f.runAll(t, study.OnFailureFail)
	if during != nil {
		during(s)
	}
	results := f.released(t, s)
	out := map[string][]byte{}
	for _, r := range results {
		var checks coordinator.Checks
		if err := json.Unmarshal(r.Checks, &checks); err != nil {
			t.Fatal(err)
		}
		if checks.Partial || len(checks.Missing) > 0 {
			t.Fatalf("%s: partial release, missing %v", r.QueryID, checks.Missing)
		}
		out[r.QueryID] = r.Release
	}
	return out
}

// Four nodes dial out through the tunnel, four listen: a study across all eight releases
// exactly what the same federation releases with every node listening, and a dial-out node
// whose tunnel drops while the study runs reconnects and is not left out.
func TestHalfTheNodesDialOutAndOneReconnectsMidStudy(t *testing.T) {
	dialOut := []string{"hbs", "stockholm", "varna", "suvs"}
	listening := startInProc(t, 300)
	want := releaseAll(t, listening, nil)

	mixed := startFederation(t, inprocOptions{perNode: 300, dialOut: dialOut})
	for _, a := range dialOut {
		if mixed.tunnels[a] == nil {
			t.Fatalf("%s does not dial out", a)
		}
	}
	cutAt := study.State("")
	got := releaseAll(t, mixed, func(s *study.Study) {
		// Cut hbs's tunnel as soon as its first ticket has gone through, while the study
		// runs: its node must redial and the coordinator's retry reach it again.
		p := mixed.tunnels["hbs"]
		base := p.bytes.Load()
		deadline := time.Now().Add(30 * time.Second)
		for p.bytes.Load() == base && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		p.cut()
		cur, err := mixed.store.Study(context.Background(), s.ID)
		if err != nil {
			t.Error(err)
			return
		}
		cutAt = cur.State
	})
	if cutAt.Final() || cutAt == "" {
		t.Fatalf("the tunnel was cut when the study was %q: not mid-study", cutAt)
	}
	if n := mixed.tunnels["hbs"].accepted.Load(); n < 2 {
		t.Fatalf("hbs opened %d tunnels: expected a reconnection after the cut", n)
	}
	if len(got) != len(want) {
		t.Fatalf("%d releases, the all-listening federation %d", len(got), len(want))
	}
	for id, w := range want {
		a, err := coordinator.Decode(w)
		if err != nil {
			t.Fatal(err)
		}
		b, err := coordinator.Decode(got[id])
		if err != nil {
			t.Fatal(err)
		}
		if !array.RecordEqual(a, b) {
			t.Errorf("%s: released table differs between the two modes", id)
		}
		a.Release()
		b.Release()
	}
}
