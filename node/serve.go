package node

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/samsyn/samsyn/node/config"
	"github.com/samsyn/samsyn/node/executor"
	"github.com/samsyn/samsyn/node/flightsrv"
	"github.com/samsyn/samsyn/node/importer"
	"github.com/samsyn/samsyn/node/preview"
	"github.com/samsyn/samsyn/node/sqlsrv"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/audit"
	"github.com/samsyn/samsyn/queries/secagg"
	"github.com/samsyn/samsyn/queries/wire"
	"github.com/samsyn/samsyn/queries/wire/mtls"
	"github.com/samsyn/samsyn/queries/wire/tunnel"
	"github.com/samsyn/samsyn/schemas"
)

// Options are what a serving node needs beyond its config: the material main loads from
// key and certificate files.
type Options struct {
	// Certificate, when set, returns the node's certificate in use (reloaded on SIGHUP).
	Certificate func() *x509.Certificate
	Config      *config.Config
	Secret      []byte
	TLS         *tls.Config // mutual TLS that admits only the coordinator
	// DialTLS is the client side of the tunnel of a node that dials out (coordinator.dial):
	// this node's certificate, pinned to the coordinator's identity.
	DialTLS        *tls.Config
	CatalogKey     ed25519.PublicKey
	TicketKeys     []ed25519.PublicKey
	AssociationKey ed25519.PublicKey
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
	Allocator      memory.Allocator // for Arrow buffers; the Go allocator when nil
	// Listening, if set, is told the Flight address once the node listens.
	Listening func(addr string)
	// Ready is told when the node is ready to answer and when it stops being ready.
	Ready func(bool)
}

// Serve runs the node until ctx is done: the store, the signed catalog, the audit log, the
// executor and the Flight service over mutual TLS, with a gRPC health service beside it.
func Serve(ctx context.Context, o Options) error {
	cfg := o.Config
	if o.TLS == nil {
		return errors.New("serve: mutual TLS is required")
	}
	if o.Ready == nil {
		o.Ready = func(bool) {}
	}
	logger := o.Logger.With("node", cfg.Association)
	cat, _, err := queries.LoadSigned(cfg.Abs(cfg.Catalog.Dir), o.CatalogKey)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.StorePath())
	if err != nil {
		return err
	}
	defer st.Close()
	log, err := audit.Open(cfg.Abs(cfg.AuditLog))
	if err != nil {
		return err
	}
	defer log.Close()
	if len(cfg.AllowedQueries) == 0 {
		logger.Warn("no allowed_queries in the node config: this node refuses every request (deny by default); list query ids, or \"*\" for every signed entry")
	}
	for _, id := range cfg.AllowedQueries {
		if _, ok := cat.Get(id); !ok && id != "*" {
			return fmt.Errorf("%s: allowed_queries: %q is not in the signed catalog", cfg.Path(), id)
		}
	}
	x, err := executor.New(ctx, st, executor.Options{
		Association: cfg.Association, Secret: o.Secret, Policy: cfg.EffectivePolicy(), Conns: cfg.Query.MaxConcurrent, CacheSize: cfg.Query.Cache, Threads: cfg.Query.Threads,
		Timeout: cfg.Query.Timeout, MemoryLimit: cfg.Query.MemoryLimit, Logger: logger, Registerer: o.Registerer, Allocator: o.Allocator,
		Plugins: executor.Plugins{Dir: cfg.PluginDir(), Timeout: cfg.Plugins.Timeout, MemoryLimit: uint64(cfg.Plugins.MemoryLimitMB) << 20},
	})
	if err != nil {
		return err
	}
	defer x.Close()
	agg, err := aggregation(cfg, o.Secret, x)
	if err != nil {
		return err
	}
	keys := map[string]ed25519.PublicKey{}
	for _, k := range o.TicketKeys {
		keys[wire.KeyID(k)] = k
	}
	svc, err := flightsrv.New(flightsrv.Options{
		NodeID: cfg.Association, Association: cfg.Association, Catalog: cat, Runner: x, Audit: log,
		Verifier: wire.Verifier{Coordinators: keys, CatalogKey: o.CatalogKey, AssociationKey: o.AssociationKey, Verified: wire.NewSignatureCache(),
			Nonces: wire.NewMemoryNonces(wire.DefaultMaxNonces)},
		Allowed: func(id string) error {
			if !cfg.Allows(id) {
				return fmt.Errorf("query %s is not in this node's allowed_queries", id)
			}
			return nil
		},
		Aggregation: agg,
		History:     func(fn func(audit.Entry)) error { return audit.ScanFile(cfg.Abs(cfg.AuditLog), fn) },
		Snapshot:    st.Snapshot,
		LastImport:  st.LastImport,
		Allocator:   o.Allocator,
		Logger:      logger, Registerer: o.Registerer,
	})
	if err != nil {
		return err
	}
	var g run.Group
	ln, err := listen(cfg, o, logger, &g)
	if err != nil {
		return err
	}
	promauto.With(o.Registerer).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "samsyn_node_data_last_import_timestamp_seconds", Help: "When data was last imported into the node's store (Unix time; 0 before any import). The snapshot's age is time() minus this.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		t, err := st.LastImport(ctx)
		if err != nil || t.IsZero() {
			return 0
		}
		return float64(t.Unix())
	})
	refused := promauto.With(o.Registerer).NewCounterVec(prometheus.CounterOpts{
		Name: "samsyn_node_tls_handshakes_refused_total", Help: "TLS handshakes the node refused, by reason (identity, unknown_ca, no_certificate, expired, closed, other).",
	}, []string{"reason"})
	switch {
	case o.Certificate != nil:
		// Reloaded certificates: the gauge reads the one in use.
		promauto.With(o.Registerer).NewGaugeFunc(prometheus.GaugeOpts{
			Name: "samsyn_node_certificate_expiry_timestamp_seconds", Help: "When the node's TLS certificate expires (Unix time).",
		}, func() float64 { return float64(o.Certificate().NotAfter.Unix()) })
	case len(o.TLS.Certificates) > 0 && o.TLS.Certificates[0].Leaf != nil:
		promauto.With(o.Registerer).NewGauge(prometheus.GaugeOpts{
			Name: "samsyn_node_certificate_expiry_timestamp_seconds", Help: "When the node's TLS certificate expires (Unix time).",
		}).Set(float64(o.TLS.Certificates[0].Leaf.NotAfter.Unix()))
	}
	creds := mtls.Observed(credentials.NewTLS(o.TLS), func(remote net.Addr, err error) {
		reason := mtls.HandshakeReason(err)
		refused.WithLabelValues(reason).Inc()
		logger.Warn("TLS handshake refused", "remote", remote.String(), "reason", reason, "err", err)
	})
	srv := flight.NewServerWithMiddleware(nil, grpc.Creds(creds))
	srv.RegisterFlightService(svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	srv.InitListener(ln)
	if o.Listening != nil {
		o.Listening(ln.Addr().String())
	}

	if cfg.SQL.Listen != "" {
		token, err := cfg.ReadSQLToken()
		if err != nil {
			return err
		}
		sqlSrv, err := sqlsrv.New(st.DB(), log, logger)
		if err != nil {
			return err
		}
		if err := st.LockConfiguration(ctx); err != nil {
			return err
		}
		sqlSrv.Instrument(o.Registerer)
		sqlLn, err := sqlsrv.Listen(cfg.SQL.Listen)
		if err != nil {
			return err
		}
		im := importer.New(st, logger, o.Registerer)
		gs := sqlsrv.NewGRPCServer(sqlSrv, token, func(ctx context.Context, table string, files []string) (*importer.Result, error) {
			res, err := im.Import(ctx, importer.Options{Table: table, Files: files, Association: cfg.Association, Secret: o.Secret})
			if err == nil {
				_, _ = log.Append(ctx, audit.Entry{Actor: "local:operator", Action: "import", Fields: map[string]string{
					"table": res.Table, "rows": fmt.Sprint(res.Rows), "changed": fmt.Sprint(res.Changed), "snapshot": res.Snapshot}})
			}
			return res, err
		}, func(ctx context.Context, query string, params map[string]string) (string, error) {
			e, ok := cat.Get(query)
			if !ok {
				return "", fmt.Errorf("unknown query %q: expected one of %s", query, strings.Join(cat.IDs(), ", "))
			}
			b, err := e.Bind(params)
			if err != nil {
				return "", err
			}
			if _, err := log.Append(ctx, audit.Entry{Actor: "local:analyst", Action: "preview", Fields: map[string]string{
				"query": e.ID, "query_hash": e.Hash(), "params": fmt.Sprint(b.Text)}}); err != nil {
				return "", fmt.Errorf("audit log unavailable: %w", err)
			}
			fed := cfg.Aggregation.Federation()
			if len(fed) == 0 {
				assoc, _ := schemas.V1().CodeList("association")
				fed = assoc.Values()
			}
			var out strings.Builder
			err = preview.Render(ctx, &out, x, e, b, cfg.Association, fed)
			return out.String(), err
		})
		g.Add(func() error {
			logger.Info("analysts' Flight SQL serving", "listen", sqlLn.Addr().String())
			return gs.Serve(sqlLn)
		}, func(error) { gs.GracefulStop() })
	}
	// Settings are in place (the executor's, the SQL service's): nothing may change them now.
	if err := st.LockConfiguration(ctx); err != nil {
		return err
	}
	g.Add(func() error {
		hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		o.Ready(true)
		logger.Info("node serving", "flight", ln.Addr().String(), "queries", len(cat.Entries))
		return srv.Serve()
	}, func(error) {
		o.Ready(false)
		hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		srv.Shutdown()
	})
	stop, cancel := context.WithCancel(ctx)
	g.Add(func() error {
		<-stop.Done()
		return nil
	}, func(error) { cancel() })
	return g.Run()
}

// listen opens the Flight port, the tunnel to the coordinator, or both: the coordinator's
// streams through the tunnel reach the same gRPC server as its direct connections, with the
// same mutual TLS. The tunnel's dialling is added to g.
func listen(cfg *config.Config, o Options, logger *slog.Logger, g *run.Group) (net.Listener, error) {
	var direct net.Listener
	if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
		direct = ln
	}
	if cfg.Coordinator.Dial == "" {
		return direct, nil
	}
	if o.DialTLS == nil {
		if direct != nil {
			direct.Close()
		}
		return nil, errors.New("serve: coordinator.dial needs the tunnel's mutual TLS")
	}
	addr := "tunnel to " + cfg.Coordinator.Dial
	if direct != nil {
		addr = direct.Addr().String() + " and " + addr
	}
	merged := tunnel.NewListener(tunnel.Addr(addr))
	if direct != nil {
		g.Add(func() error { return merged.Pump(direct) }, func(error) { merged.Close() })
	}
	up := promauto.With(o.Registerer).NewGauge(prometheus.GaugeOpts{
		Name: "samsyn_node_tunnel_up", Help: "1 while the node's tunnel to the coordinator is open (dial-out mode), else 0.",
	})
	opened := promauto.With(o.Registerer).NewCounter(prometheus.CounterOpts{
		Name: "samsyn_node_tunnel_opened_total", Help: "Tunnels to the coordinator opened (dial-out mode); more than one means it was re-established.",
	})
	d := &tunnel.Dialer{Addr: cfg.Coordinator.Dial, TLS: o.DialTLS, Logger: logger, OnState: func(on bool) {
		if on {
			up.Set(1)
			opened.Inc()
		} else {
			up.Set(0)
		}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	g.Add(func() error { return d.Run(ctx, merged) }, func(error) { cancel() })
	return merged, nil
}

// aggregation builds the node's part in pooled releases from its config: its key derived
// from the node secret, the pinned keys of the federation, the cohort policy, and the audit
// log to replay the cohorts it has joined. Without pinned keys it is nil: the node answers
// only for itself.
func aggregation(cfg *config.Config, secret []byte, x *executor.Executor) (*flightsrv.Aggregation, error) {
	ag := cfg.Aggregation
	if len(ag.Peers) == 0 {
		return nil, nil
	}
	key, err := secagg.DeriveKey(secret)
	if err != nil {
		return nil, err
	}
	peers := map[string]*ecdh.PublicKey{}
	for id, hexKey := range ag.Peers {
		pub, err := secagg.ParsePublic(hexKey)
		if err != nil {
			return nil, fmt.Errorf("%s: aggregation.peers.%s: %w", cfg.Path(), id, err)
		}
		peers[id] = pub
	}
	if !peers[cfg.Association].Equal(key.PublicKey()) {
		return nil, fmt.Errorf("%s: aggregation.peers.%s is not this node's key (samsyn node aggregation-key prints it: %s)",
			cfg.Path(), cfg.Association, secagg.PublicHex(key.PublicKey()))
	}
	return &flightsrv.Aggregation{
		Contributor: x, Key: key, Peers: peers, MaxCohorts: ag.MaxCohorts,
		Allowed: func(cohort []string) error { return ag.CohortAllowed(cfg.Association, cohort) },
	}, nil
}
