package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/api"
	"github.com/samsyn/samsyn/coordinator/config"
	"github.com/samsyn/samsyn/coordinator/fanout"
	"github.com/samsyn/samsyn/coordinator/nodeclient"
	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/audit"
	"github.com/samsyn/samsyn/queries/wire/tunnel"
)

// Options are what the daemon needs beyond its config: the material main loads from files.
type Options struct {
	Config       *config.Config
	TicketKey    ed25519.PrivateKey
	CatalogKey   ed25519.PublicKey
	ApprovalKeys map[string]ed25519.PublicKey               // by association
	NodeTLS      func(identity string) (*tls.Config, error) // client TLS pinned to a node's identity
	// TunnelTLS is the server TLS of the tunnel port, admitting the given node identities
	// (the nodes_tls certificate); needed only when a node dials out.
	TunnelTLS func(identities ...string) (*tls.Config, error)
	// NodeCertificate, when set, returns the coordinator's client certificate in use
	// (reloaded on SIGHUP), for the expiry gauge.
	NodeCertificate func() *x509.Certificate
	HTTPTLS         *tls.Config // nil on loopback
	Users           []api.Token
	Logger          *slog.Logger
	Registry        *prometheus.Registry
	// Extra, if set, may add routes (the dashboard) to the HTTP mux.
	Extra     func(mux *http.ServeMux, a *api.Server, c *coordinator.Coordinator, s *state.Store)
	Listening func(url string)
	Ready     func(bool)
}

// tunnelHub listens for the tunnels of the nodes that dial out, if any do.
func tunnelHub(cfg *config.Config, o Options) (*tunnel.Hub, net.Listener, error) {
	var ids []string
	for _, n := range cfg.Nodes {
		if n.DialOut {
			ids = append(ids, n.Identity)
		}
	}
	if len(ids) == 0 {
		return nil, nil, nil
	}
	if o.TunnelTLS == nil {
		return nil, nil, errors.New("coordinator: nodes dial out but no tunnel TLS is configured")
	}
	tlsConf, err := o.TunnelTLS(ids...)
	if err != nil {
		return nil, nil, err
	}
	opened := promauto.With(o.Registry).NewCounterVec(prometheus.CounterOpts{
		Name: "samsyn_coordinator_tunnels_opened_total", Help: "Tunnels opened by dial-out nodes, by node identity.",
	}, []string{"identity"})
	up := promauto.With(o.Registry).NewGaugeVec(prometheus.GaugeOpts{
		Name: "samsyn_coordinator_tunnel_up", Help: "1 while a dial-out node's tunnel is open, else 0, by node identity.",
	}, []string{"identity"})
	for _, id := range ids {
		up.WithLabelValues(id).Set(0)
	}
	hub, err := tunnel.NewHub(tlsConf, ids, o.Logger, func(id string, open bool) {
		if open {
			opened.WithLabelValues(id).Inc()
			up.WithLabelValues(id).Set(1)
		} else {
			up.WithLabelValues(id).Set(0)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", cfg.TunnelListen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s (tunnel_listen): %w", cfg.TunnelListen, err)
	}
	return hub, ln, nil
}

// Run serves until ctx is done.
func Run(ctx context.Context, o Options) error {
	cfg := o.Config
	if o.Ready == nil {
		o.Ready = func(bool) {}
	}
	cat, sigs, err := queries.LoadSigned(cfg.Abs(cfg.Catalog.Dir), o.CatalogKey)
	if err != nil {
		return err
	}
	st, err := state.Open(ctx, cfg.Abs(cfg.Store))
	if err != nil {
		return err
	}
	defer st.Close()
	log, err := audit.Open(cfg.Abs(cfg.AuditLog))
	if err != nil {
		return err
	}
	defer log.Close()
	var nodes []coordinator.Node
	expiry := promauto.With(o.Registry).NewGaugeVec(prometheus.GaugeOpts{
		Name: "samsyn_coordinator_certificate_expiry_timestamp_seconds", Help: "When the coordinator's TLS certificates expire (Unix time), by use.",
	}, []string{"use"})
	if o.HTTPTLS != nil && len(o.HTTPTLS.Certificates) > 0 && o.HTTPTLS.Certificates[0].Leaf != nil {
		expiry.WithLabelValues("https").Set(float64(o.HTTPTLS.Certificates[0].Leaf.NotAfter.Unix()))
	}
	hub, tunnelLn, err := tunnelHub(cfg, o)
	if err != nil {
		return err
	}
	if tunnelLn != nil {
		defer tunnelLn.Close()
	}
	for _, n := range cfg.Nodes {
		tlsConf, err := o.NodeTLS(n.Identity)
		if err != nil {
			return err
		}
		if len(tlsConf.Certificates) > 0 && tlsConf.Certificates[0].Leaf != nil {
			expiry.WithLabelValues("nodes").Set(float64(tlsConf.Certificates[0].Leaf.NotAfter.Unix()))
		}
		if o.NodeCertificate != nil {
			expiry.WithLabelValues("nodes").Set(float64(o.NodeCertificate().NotAfter.Unix()))
		}
		node := coordinator.Node{Association: n.Association, ApprovalKey: o.ApprovalKeys[n.Association], Mode: n.Mode()}
		var c *nodeclient.Client
		if n.DialOut {
			c, err = nodeclient.DialTunnel(n.Association, "tunnel/"+n.Association, hub.Dialer(n.Identity), tlsConf, nil)
			node.Tunnel = func() (time.Time, bool) { return hub.Connected(n.Identity) }
		} else {
			c, err = nodeclient.Dial(n.Association, n.Address, tlsConf, nil)
		}
		if err != nil {
			return err
		}
		defer c.Close()
		node.Client, node.Health, node.Status = c, c.Healthy, c.Status
		nodes = append(nodes, node)
	}
	coord, err := coordinator.New(coordinator.Options{ID: cfg.ID, Store: st, Catalog: cat, Signatures: sigs, Nodes: nodes,
		TicketKey: o.TicketKey, Policy: cfg.EffectivePolicy(), Audit: log, Logger: o.Logger, Registerer: o.Registry, StandingEvery: cfg.StandingEvery,
		FanOut: fanout.Options{NodeTimeout: cfg.FanOut.NodeTimeout, Retries: cfg.FanOut.Retries, Backoff: cfg.FanOut.Backoff}})
	if err != nil {
		return err
	}
	a := api.New(coord, st, o.Users, o.Logger)
	a.Instrument(o.Registry)
	mux := a.Handler()
	var ready atomic.Bool
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		// Not ready while the state cannot be written (a full disk, say); ready again as
		// soon as it can. The cause goes to the log, not to the caller.
		if err := st.Ready(r.Context()); err != nil {
			o.Logger.Warn("coordinator state cannot be written: not ready", "err", err)
			http.Error(w, "not ready: the coordinator state cannot be written", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if o.Extra != nil {
		o.Extra(mux, a, coord, st)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	scheme := "http"
	if o.HTTPTLS != nil {
		ln = tls.NewListener(ln, o.HTTPTLS)
		scheme = "https"
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// Metrics on their own loopback listener: the API port never serves them.
	metricsMux := http.NewServeMux()
	metricsMux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{Registry: o.Registry}))
	mln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen on %s (metrics_listen): %w", cfg.MetricsListen, err)
	}
	msrv := &http.Server{Handler: metricsMux, ReadHeaderTimeout: 10 * time.Second}

	var g run.Group
	if hub != nil {
		tctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			o.Logger.Info("accepting the tunnels of dial-out nodes", "listen", tunnelLn.Addr().String())
			return hub.Serve(tctx, tunnelLn)
		}, func(error) { cancel() })
	}
	g.Add(func() error {
		if err := msrv.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, func(error) { _ = msrv.Close() })
	g.Add(func() error {
		coord.Start(ctx)
		ready.Store(true)
		o.Ready(true)
		if o.Listening != nil {
			o.Listening(fmt.Sprintf("%s://%s", scheme, ln.Addr()))
		}
		o.Logger.Info("coordinator serving", "url", fmt.Sprintf("%s://%s", scheme, ln.Addr()), "nodes", len(nodes), "queries", len(cat.Entries))
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, func(error) {
		ready.Store(false)
		o.Ready(false)
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		coord.Stop()
	})
	stop, cancel := context.WithCancel(ctx)
	g.Add(func() error { <-stop.Done(); return nil }, func(error) { cancel() })
	return g.Run()
}
