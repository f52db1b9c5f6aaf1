package tunnel

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/samsyn/samsyn/queries/wire/mtls"
)

type pki struct {
	dir string
	ca  *mtls.CA
}

func newPKI(t *testing.T) *pki {
	ca, err := mtls.NewCA("tunnel-test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{dir: t.TempDir(), ca: ca}
}

func (p *pki) files(t *testing.T, name, identity string) mtls.Files {
	t.Helper()
	leaf, err := p.ca.Issue(identity, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := mtls.Files{CA: filepath.Join(p.dir, "ca.pem"), Cert: filepath.Join(p.dir, name+".pem"), Key: filepath.Join(p.dir, name+"-key.pem")}
	if err := os.WriteFile(f.CA, p.ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := mtls.WriteFiles(f.Cert, leaf.CertPEM, f.Key, leaf.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return f
}

var (
	coordID = mtls.CoordinatorIdentity("region")
	nodeID  = mtls.NodeIdentity("hbs")
)

// startNode serves a gRPC health service, with the node's Flight TLS, on the streams of a
// tunnel dialled to hubAddr; peers records the identity each call saw.
func startNode(t *testing.T, p *pki, nodeFiles mtls.Files, pinned, hubAddr string, opened *atomic.Int64) *atomic.Value {
	t.Helper()
	serverTLS, err := mtls.ServerConfig(nodeFiles, coordID)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := mtls.ClientConfig(nodeFiles, pinned)
	if err != nil {
		t.Fatal(err)
	}
	var seen atomic.Value
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if pr, ok := peer.FromContext(ctx); ok {
				if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
					seen.Store(mtls.Identities(ti.State.PeerCertificates[0])[0])
				}
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l := NewListener(Addr("tunnel"))
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dialer{Addr: hubAddr, TLS: clientTLS, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnState: func(on bool) {
			if on {
				opened.Add(1)
			}
		}}
	done := make(chan struct{}, 2)
	go func() { _ = d.Run(ctx, l); done <- struct{}{} }()
	go func() { _ = srv.Serve(l); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); srv.Stop(); l.Close(); <-done; <-done })
	return &seen
}

func startHub(t *testing.T, coordFiles mtls.Files, allowed ...string) (*Hub, string) {
	t.Helper()
	tlsConf, err := mtls.ServerConfig(coordFiles, allowed...)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := NewHub(tlsConf, allowed, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = hub.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return hub, ln.Addr().String()
}

func client(t *testing.T, hub *Hub, coordFiles mtls.Files) healthpb.HealthClient {
	t.Helper()
	tlsConf, err := mtls.ClientConfig(coordFiles, nodeID)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///hbs", grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)), grpc.WithContextDialer(hub.Dialer(nodeID)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

func check(hc healthpb.HealthClient, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	return err
}

func TestCallsReachTheNodeThroughItsTunnelAndSurviveADrop(t *testing.T) {
	p := newPKI(t)
	coordFiles := p.files(t, "coordinator", coordID)
	nodeFiles := p.files(t, "node", nodeID)
	hub, addr := startHub(t, coordFiles, nodeID)
	var opened atomic.Int64
	seen := startNode(t, p, nodeFiles, coordID, addr, &opened)
	hc := client(t, hub, coordFiles)
	if err := check(hc, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The inner connection is the push mode's: the node's server saw the coordinator's
	// certificate in its own handshake.
	if got := seen.Load(); got != coordID {
		t.Fatalf("the node saw %v as its peer, expected %s", got, coordID)
	}
	since, open := hub.Connected(nodeID)
	if !open || since.IsZero() {
		t.Fatal("the hub does not report the tunnel open")
	}
	// Drop the tunnel from the coordinator's side: the node redials and calls go through again.
	hub.mu.Lock()
	old := hub.sessions[nodeID]
	hub.mu.Unlock()
	_ = old.mux.Close()
	// A call already on the dropped connection fails (Unavailable, which the coordinator
	// retries); a retry within seconds reaches the node through its new tunnel.
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = check(hc, 2*time.Second); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("after the drop: %v", err)
	}
	if n := opened.Load(); n < 2 {
		t.Fatalf("the node opened %d tunnels: expected it to redial", n)
	}
}

func TestATunnelFromAnUnlistedNodeOrToTheWrongCoordinatorCarriesNothing(t *testing.T) {
	p := newPKI(t)
	coordFiles := p.files(t, "coordinator", coordID)
	// The hub admits only varna; hbs dials it.
	hub, addr := startHub(t, coordFiles, mtls.NodeIdentity("varna"))
	var opened atomic.Int64
	startNode(t, p, p.files(t, "node", nodeID), coordID, addr, &opened)
	hc := client(t, hub, coordFiles)
	if err := check(hc, 700*time.Millisecond); err == nil {
		t.Fatal("a call reached a node whose identity the hub does not admit")
	}
	if _, open := hub.Connected(nodeID); open || opened.Load() != 0 {
		t.Fatalf("an unlisted node's tunnel was opened (%d)", opened.Load())
	}

	// The node pins another coordinator's identity: it refuses the hub.
	hub2, addr2 := startHub(t, coordFiles, nodeID)
	var opened2 atomic.Int64
	startNode(t, p, p.files(t, "node2", nodeID), mtls.CoordinatorIdentity("elsewhere"), addr2, &opened2)
	if err := check(client(t, hub2, coordFiles), 700*time.Millisecond); err == nil {
		t.Fatal("a node that pins another coordinator served this one")
	}
	if opened2.Load() != 0 {
		t.Fatal("a node opened a tunnel to a coordinator it does not pin")
	}
}

func TestListenerClosedRefusesFedConnections(t *testing.T) {
	l := NewListener(Addr("x"))
	a, b := net.Pipe()
	defer b.Close()
	l.Close()
	l.Feed(a)
	if _, err := a.Write([]byte{1}); err == nil {
		t.Fatal("a connection fed to a closed listener was left open")
	}
	if _, err := l.Accept(); err == nil {
		t.Fatal("Accept on a closed listener returned a connection")
	}
}
