package main

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/samsyn/samsyn/cmd/internal/keyfile"
	"github.com/samsyn/samsyn/cmd/internal/proc"
	"github.com/samsyn/samsyn/coordinator/api"
	"github.com/samsyn/samsyn/coordinator/config"
	"github.com/samsyn/samsyn/coordinator/daemon"
	"github.com/samsyn/samsyn/queries/wire/mtls"
)

func newCoordinatorCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "coordinator", Short: "Run the federation's coordinator"}
	var cfgPath string
	serve := &cobra.Command{
		Use:   "serve --config coordinator.yaml",
		Short: "Serve the HTTP API, run approved studies across the nodes and release merged results",
		Args:  cobra.NoArgs,
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
			users, err := cfg.LoadUsers()
			if err != nil {
				return err
			}
			tokens := make([]api.Token, len(users))
			for i, u := range users {
				tokens[i] = api.Token{User: api.User{Name: u.Name, Role: u.Role}, SHA256: u.SHA256}
			}
			ticketKey, err := keyfile.LoadPrivate(cfg.Abs(cfg.TicketKey))
			if err != nil {
				return err
			}
			catKey, err := keyfile.LoadPublic(cfg.Abs(cfg.Catalog.AuthorityKey))
			if err != nil {
				return err
			}
			approval := map[string]ed25519.PublicKey{}
			for _, n := range cfg.Nodes {
				k, err := keyfile.LoadPublic(cfg.Abs(n.ApprovalKey))
				if err != nil {
					return err
				}
				approval[n.Association] = k
			}
			files := mtls.Files{CA: cfg.Abs(cfg.NodesTLS.CA), Cert: cfg.Abs(cfg.NodesTLS.Cert), Key: cfg.Abs(cfg.NodesTLS.Key)}
			certs, err := mtls.NewReloader(files)
			if err != nil {
				return err
			}
			stopReload := proc.OnReload(func() {
				if err := certs.Reload(); err != nil {
					logger.Error("certificates not reloaded: keeping the ones in use", "err", err)
					return
				}
				logger.Info("certificates reloaded", "serial", certs.Leaf().SerialNumber.String(), "not_after", certs.Leaf().NotAfter)
			})
			defer stopReload()
			var httpTLS *tls.Config
			if cfg.TLS != nil && cfg.TLS.Cert != "" {
				pair, err := tls.LoadX509KeyPair(cfg.Abs(cfg.TLS.Cert), cfg.Abs(cfg.TLS.Key))
				if err != nil {
					return fmt.Errorf("API certificate: %w", err)
				}
				httpTLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
			}
			ctx, stop := proc.SignalContext(cmd.Context())
			defer stop()
			return daemon.Run(ctx, daemon.Options{
				Config: cfg, TicketKey: ticketKey, CatalogKey: catKey, ApprovalKeys: approval, HTTPTLS: httpTLS, Users: tokens,
				NodeTLS: certs.ClientConfig, TunnelTLS: certs.ServerConfig, NodeCertificate: certs.Leaf,
				Logger: logger, Registry: proc.NewRegistry("coordinator"),
				Extra: dashboardRoutes(cfg.Plans()),
				Listening: func(url string) {
					fmt.Fprintf(cmd.OutOrStdout(), "coordinator listening on %s\n", url)
				},
			})
		},
	}
	serve.Flags().StringVar(&cfgPath, "config", "", "the coordinator's coordinator.yaml")
	cmd.AddCommand(serve, newCoordinatorBackupCmd(g))
	return cmd
}
