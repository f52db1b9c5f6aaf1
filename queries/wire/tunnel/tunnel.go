// Package tunnel lets a node serve the coordinator without an inbound port.
//
// A node in dial-out mode opens one long-lived connection to the coordinator's tunnel port,
// mutual TLS on both ends (the node pins the coordinator's samsyn:// identity, the
// coordinator admits only the identities of its dial-out nodes). Inside it the roles turn
// around: the connection is multiplexed (yamux) and the coordinator opens streams that the
// node accepts as if they had arrived on its Flight port. Each stream then carries exactly the
// connection push mode would make — a second mutual-TLS handshake with the node's Flight
// certificate and the coordinator's client certificate, then gRPC — so ticket verification,
// policy, protection and audit are the same code, seeing the same peer identity, in both modes.
//
// The node redials with exponential backoff and jitter when the tunnel drops; the coordinator
// keeps the latest session per node and its gRPC clients wait for one within their deadline.
package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/samsyn/samsyn/queries/wire/mtls"
)

// ALPN names the tunnel protocol in the outer handshake, so a tunnel is never mistaken for a
// Flight connection (which negotiates h2).
const ALPN = "samsyn-tunnel/1"

// muxConfig is the multiplexer's configuration on both ends: keepalives every 10 s so that a
// silently dead peer is noticed within seconds, windows large enough for a release.
func muxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	c.MaxStreamWindowSize = 4 << 20
	c.LogOutput = io.Discard
	return c
}

// welcome is the byte the coordinator sends once it has admitted a tunnel.
const welcome = 0x53

func readWelcome(ctx context.Context, conn net.Conn) error {
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(d)
		defer conn.SetReadDeadline(time.Time{})
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return err
	}
	if b[0] != welcome {
		return fmt.Errorf("unexpected first byte %#x", b[0])
	}
	return nil
}

// Listener is a net.Listener fed by hand: the node's gRPC server accepts from it the streams
// the coordinator opens through the tunnel and, when the node also listens, the connections of
// its Flight port.
type Listener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// NewListener returns an empty Listener reporting addr.
func NewListener(addr net.Addr) *Listener {
	return &Listener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept waits for the next connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept; connections fed afterwards are closed.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr is the address given to NewListener.
func (l *Listener) Addr() net.Addr { return l.addr }

// Feed hands c to Accept, or closes it if the listener is closed.
func (l *Listener) Feed(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		_ = c.Close()
	}
}

// Pump feeds every connection ln accepts until ln fails or l is closed, and closes ln.
func (l *Listener) Pump(ln net.Listener) error {
	go func() { <-l.closed; _ = ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return nil
			default:
				return err
			}
		}
		l.Feed(c)
	}
}

// Addr names a tunnel endpoint in logs and in a Listener's Addr.
type Addr string

// Network is "samsyn-tunnel".
func (Addr) Network() string  { return "samsyn-tunnel" }
func (a Addr) String() string { return string(a) }

// Dialer is the node's end: it keeps one tunnel open to the coordinator.
type Dialer struct {
	// Addr is the coordinator's tunnel address, host:port.
	Addr string
	// TLS is the node's client configuration, pinned to the coordinator's identity.
	TLS    *tls.Config
	Logger *slog.Logger
	// OnState, if set, is told when the tunnel opens (true) and when it drops (false).
	OnState func(connected bool)
	// MinBackoff and MaxBackoff bound the wait between attempts (200 ms and 10 s when zero:
	// a node is back within seconds of a coordinator restart, and a refusing coordinator sees
	// one attempt every 5 to 10 seconds); each wait is drawn between half and all of the bound.
	MinBackoff, MaxBackoff time.Duration
}

// Run keeps the tunnel open until ctx ends, feeding the coordinator's streams to l.
func (d *Dialer) Run(ctx context.Context, l *Listener) error {
	if d.TLS == nil {
		return errors.New("tunnel: mutual TLS is required")
	}
	minB, maxB := d.MinBackoff, d.MaxBackoff
	if minB <= 0 {
		minB = 200 * time.Millisecond
	}
	if maxB <= 0 {
		maxB = 10 * time.Second
	}
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bound := minB
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := d.session(ctx, l, logger)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			bound, attempt = minB, 1 // a tunnel that held for a while starts over
		}
		wait := bound/2 + rand.N(bound/2+1)
		logger.Warn("tunnel to the coordinator down: redialling", "coordinator", d.Addr, "attempt", attempt, "in", wait.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		bound = min(2*bound, maxB)
	}
}

// session dials once and serves the tunnel until it drops.
func (d *Dialer) session(ctx context.Context, l *Listener, logger *slog.Logger) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := (&net.Dialer{KeepAlive: 15 * time.Second}).DialContext(dctx, "tcp", d.Addr)
	if err != nil {
		return err
	}
	cfg := d.TLS.Clone()
	cfg.NextProtos = []string{ALPN}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(dctx); err != nil {
		_ = raw.Close()
		return fmt.Errorf("TLS handshake with the coordinator: %w", err)
	}
	// In TLS 1.3 the client finishes its handshake before the server has checked the
	// client's certificate: the coordinator's one-byte welcome says it admitted this node.
	if err := readWelcome(dctx, conn); err != nil {
		_ = conn.Close()
		return fmt.Errorf("the coordinator did not admit this node: %w", err)
	}
	sess, err := yamux.Server(conn, muxConfig())
	if err != nil {
		_ = conn.Close()
		return err
	}
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { _ = sess.Close() })
	defer stop()
	logger.Info("tunnel to the coordinator open", "coordinator", d.Addr)
	if d.OnState != nil {
		d.OnState(true)
		defer d.OnState(false)
	}
	for {
		s, err := sess.Accept()
		if err != nil {
			return fmt.Errorf("tunnel closed: %w", err)
		}
		l.Feed(s)
	}
}

// Hub is the coordinator's end: it accepts the tunnels of dial-out nodes and opens streams
// through them.
type Hub struct {
	tls     *tls.Config
	allowed []string
	logger  *slog.Logger
	onState func(identity string, connected bool)

	mu       sync.Mutex
	sessions map[string]*session
	changed  chan struct{} // closed and replaced on every change
}

type session struct {
	mux   *yamux.Session
	since time.Time
}

// NewHub accepts tunnels from the given node identities; tlsConf is the coordinator's server
// configuration admitting exactly those identities. onState, if set, is told of every tunnel
// opened or closed.
func NewHub(tlsConf *tls.Config, identities []string, logger *slog.Logger, onState func(identity string, connected bool)) (*Hub, error) {
	if tlsConf == nil {
		return nil, errors.New("tunnel: mutual TLS is required")
	}
	if len(identities) == 0 {
		return nil, errors.New("tunnel: no dial-out node")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg := tlsConf.Clone()
	cfg.NextProtos = []string{ALPN}
	if get := tlsConf.GetConfigForClient; get != nil {
		cfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := get(h)
			if err != nil || c == nil {
				return c, err
			}
			c = c.Clone()
			c.NextProtos = []string{ALPN}
			return c, nil
		}
	}
	return &Hub{tls: cfg, allowed: slices.Clone(identities), logger: logger, onState: onState,
		sessions: map[string]*session{}, changed: make(chan struct{})}, nil
}

// Serve accepts tunnels on ln until ctx ends.
func (h *Hub) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				h.closeAll()
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.serveConn(ctx, raw)
		}()
	}
}

func (h *Hub) serveConn(ctx context.Context, raw net.Conn) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn := tls.Server(raw, h.tls)
	err := conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		_ = raw.Close()
		h.logger.Warn("tunnel handshake refused", "remote", raw.RemoteAddr().String(), "reason", mtls.HandshakeReason(err), "err", err)
		return
	}
	state := conn.ConnectionState()
	id := ""
	if len(state.PeerCertificates) > 0 {
		for _, u := range mtls.Identities(state.PeerCertificates[0]) {
			if slices.Contains(h.allowed, u) {
				id = u
				break
			}
		}
	}
	if id == "" || state.NegotiatedProtocol != ALPN {
		_ = conn.Close()
		h.logger.Warn("tunnel refused: not a dial-out node's tunnel", "remote", raw.RemoteAddr().String())
		return
	}
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte{welcome}); err != nil {
		_ = conn.Close()
		return
	}
	_ = conn.SetWriteDeadline(time.Time{})
	mux, err := yamux.Client(conn, muxConfig())
	if err != nil {
		_ = conn.Close()
		return
	}
	s := &session{mux: mux, since: time.Now()}
	h.mu.Lock()
	old := h.sessions[id]
	h.sessions[id] = s
	h.broadcast()
	h.mu.Unlock()
	if old != nil {
		_ = old.mux.Close() // the node redialled: its old tunnel is dead or about to be
	}
	h.logger.Info("tunnel open", "node", id, "remote", raw.RemoteAddr().String())
	if h.onState != nil {
		h.onState(id, true)
	}
	select {
	case <-mux.CloseChan():
	case <-ctx.Done():
		_ = mux.Close()
	}
	h.mu.Lock()
	current := h.sessions[id] == s
	if current {
		delete(h.sessions, id)
		h.broadcast()
	}
	h.mu.Unlock()
	if current {
		h.logger.Warn("tunnel closed", "node", id)
		if h.onState != nil {
			h.onState(id, false)
		}
	}
}

// broadcast wakes every DialContext waiting for a session; h.mu is held.
func (h *Hub) broadcast() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *Hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.sessions {
		_ = s.mux.Close()
	}
}

// Connected reports whether the node with identity has a tunnel open, and since when.
func (h *Hub) Connected(identity string) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.sessions[identity]
	if !ok || s.mux.IsClosed() {
		return time.Time{}, false
	}
	return s.since, true
}

// Dialer returns a gRPC context dialer that opens a stream to the node with identity,
// waiting within ctx for its tunnel if it is not open.
func (h *Hub) Dialer(identity string) func(ctx context.Context, _ string) (net.Conn, error) {
	return func(ctx context.Context, _ string) (net.Conn, error) {
		for {
			h.mu.Lock()
			s, changed := h.sessions[identity], h.changed
			h.mu.Unlock()
			if s != nil && !s.mux.IsClosed() {
				c, err := s.mux.Open()
				if err == nil {
					return c, nil
				}
				if !s.mux.IsClosed() {
					return nil, err
				}
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return nil, fmt.Errorf("node %s has no tunnel open: %w", identity, ctx.Err())
			}
		}
	}
}
