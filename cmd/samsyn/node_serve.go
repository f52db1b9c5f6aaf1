package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/oklog/run"
	"github.com/spf13/cobra"

	"github.com/samsyn/samsyn/cmd/internal/keyfile"
	"github.com/samsyn/samsyn/cmd/internal/proc"
	"github.com/samsyn/samsyn/node"
	"github.com/samsyn/samsyn/node/config"
	"github.com/samsyn/samsyn/queries/audit"
	"github.com/samsyn/samsyn/queries/wire/mtls"
)

func newNodeServeCmd(g *globals) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "serve --config node.yaml",
		Short: "Serve approved catalog queries to the coordinator over Arrow Flight with mutual TLS",
		Long: `Serve approved catalog queries to the coordinator over Arrow Flight with mutual TLS.

The coordinator reaches the node in one of two ways (node.yaml):
  listen: 0.0.0.0:7001                    the coordinator dials this Flight port
  coordinator: {dial: coordinator:7443}   the node dials out and keeps a mutual-TLS tunnel
                                          open to the coordinator's tunnel_listen; it needs
                                          no inbound port (the coordinator lists it with
                                          dial_out: true)
Both may be set. SIGHUP reloads the certificates; SIGINT or SIGTERM stop the node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			logger, err := g.logger()
			if err != nil {
				return err
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if err := cfg.ValidateServe(); err != nil {
				return err
			}
			secret, err := cfg.ReadSecret()
			if err != nil {
				return err
			}
			catKey, err := keyfile.LoadPublic(cfg.Abs(cfg.Catalog.AuthorityKey))
			if err != nil {
				return err
			}
			assocKey, err := keyfile.LoadPublic(cfg.Abs(cfg.AssociationKey))
			if err != nil {
				return err
			}
			var ticketKeys []ed25519.PublicKey
			for _, p := range cfg.Coordinator.TicketKeys {
				k, err := keyfile.LoadPublic(cfg.Abs(p))
				if err != nil {
					return err
				}
				ticketKeys = append(ticketKeys, k)
			}
			certs, err := mtls.NewReloader(mtls.Files{CA: cfg.Abs(cfg.TLS.CA), Cert: cfg.Abs(cfg.TLS.Cert), Key: cfg.Abs(cfg.TLS.Key)})
			if err != nil {
				return err
			}
			tlsConf, err := certs.ServerConfig(cfg.Coordinator.Identity)
			if err != nil {
				return err
			}
			var dialTLS *tls.Config
			if cfg.Coordinator.Dial != "" {
				if dialTLS, err = certs.ClientConfig(cfg.Coordinator.Identity); err != nil {
					return err
				}
			}
			stopReload := proc.OnReload(func() {
				if err := certs.Reload(); err != nil {
					logger.Error("certificates not reloaded: keeping the ones in use", "err", err)
					return
				}
				logger.Info("certificates reloaded", "serial", certs.Leaf().SerialNumber.String(), "not_after", certs.Leaf().NotAfter)
			})
			defer stopReload()
			reg := proc.NewRegistry("node")
			ready := &proc.Readiness{}
			hs, err := proc.NewHealthServer(cfg.HealthListen, reg, ready)
			if err != nil {
				return err
			}
			ctx, stop := proc.SignalContext(cmd.Context())
			defer stop()
			ctx, cancel := context.WithCancel(ctx)
			var g run.Group
			g.Add(func() error {
				return node.Serve(ctx, node.Options{Config: cfg, Secret: secret, TLS: tlsConf, DialTLS: dialTLS, Certificate: certs.Leaf, CatalogKey: catKey,
					TicketKeys: ticketKeys, AssociationKey: assocKey, Logger: logger, Registerer: reg, Ready: ready.Set,
					Listening: func(addr string) {
						logger.Info("listening", "flight", addr, "health", hs.Addr())
						fmt.Fprintf(cmd.OutOrStdout(), "node %s listening on %s (health %s)\n", cfg.Association, addr, hs.Addr())
					}})
			}, func(error) { cancel() })
			g.Add(func() error { return hs.Run(ctx) }, func(error) { cancel() })
			return g.Run()
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the node's node.yaml")
	return cmd
}

func newNodeAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Inspect the node's audit log"}
	var cfgPath, file, anchor string
	verify := &cobra.Command{
		Use:   "verify (--config node.yaml | --file audit.log) [--anchor SEQ:HASH]",
		Short: "Check the audit log's hash chain: any modified, removed, inserted or reordered line is named",
		Long: `Check the audit log's hash chain: any modified, removed, inserted or reordered line is named.

With --anchor, also check that the log still holds the entry the coordinator last saw from
this node (GET /api/v1/nodes gives it per node as audit.seq and audit.hash): removing entries
from the end of a log leaves its chain intact, but not its anchor.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := file
			if path == "" {
				if cfgPath == "" {
					return errors.New("--config or --file is required")
				}
				cfg, err := config.Load(cfgPath)
				if err != nil {
					return err
				}
				path = cfg.Abs(cfg.AuditLog)
			}
			n, err := audit.VerifyFile(path)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if anchor != "" {
				seqText, hash, ok := strings.Cut(anchor, ":")
				seq, perr := strconv.ParseInt(seqText, 10, 64)
				if !ok || perr != nil || seq < 1 || len(hash) != 64 {
					return fmt.Errorf("--anchor %q: expected SEQ:HASH, e.g. 1042:3fa1… (64 hex characters)", anchor)
				}
				if err := audit.CheckAnchor(path, seq, hash); err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d entries, hash chain intact, anchor %d held\n", path, n, seq)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d entries, hash chain intact\n", path, n)
			return nil
		},
	}
	verify.Flags().StringVar(&cfgPath, "config", "", "the node's node.yaml")
	verify.Flags().StringVar(&file, "file", "", "an audit log file")
	verify.Flags().StringVar(&anchor, "anchor", "", "SEQ:HASH of the entry the coordinator last saw from this node")
	cmd.AddCommand(verify)
	return cmd
}
