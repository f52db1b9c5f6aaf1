package proc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Version is the release of this binary (main sets it from its build-time version).
var Version = "dev"

// NewRegistry is a private metrics registry with the Go, process and build-info collectors,
// and samsyn_build_info naming this binary's release and the daemon it runs.
func NewRegistry(daemon string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewBuildInfoCollector())
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "samsyn_build_info", Help: "Always 1: the release of the running samsyn binary (git describe) and the daemon it runs."}, []string{"version", "daemon"})
	info.WithLabelValues(Version, daemon).Set(1)
	reg.MustRegister(info)
	return reg
}

// Readiness is a flag a daemon raises once its store is open and its config valid, and
// lowers as soon as shutdown starts.
type Readiness struct{ ready atomic.Bool }

// Set raises or lowers the flag.
func (r *Readiness) Set(v bool) { r.ready.Store(v) }

// Ready reports the flag.
func (r *Readiness) Ready() bool { return r.ready.Load() }

// HealthServer serves /healthz (alive), /readyz (ready) and /metrics on a listener.
type HealthServer struct {
	srv *http.Server
	ln  net.Listener
}

// NewHealthServer listens on addr.
func NewHealthServer(addr string, reg *prometheus.Registry, ready *Readiness) (*HealthServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for health on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return &HealthServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}, nil
}

// Addr is the bound address.
func (h *HealthServer) Addr() string { return h.ln.Addr().String() }

// Run serves until ctx is done.
func (h *HealthServer) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- h.srv.Serve(h.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := h.srv.Shutdown(sctx)
		if e := <-errc; !errors.Is(e, http.ErrServerClosed) {
			err = errors.Join(err, e)
		}
		return err
	}
}
