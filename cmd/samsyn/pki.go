package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/samsyn/samsyn/queries/wire/mtls"
)

func newPKICmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Run the federation's small certificate authority (mutual TLS between coordinator and nodes)",
	}
	var dir string
	var years int
	initCmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Create a federation CA in DIR (ca.pem, ca-key.pem with mode 0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--dir is required")
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			ca, err := mtls.NewCA("Samsyn federation CA", time.Duration(years)*365*24*time.Hour)
			if err != nil {
				return err
			}
			key, err := ca.KeyPEM()
			if err != nil {
				return err
			}
			if err := mtls.WriteFiles(filepath.Join(dir, "ca.pem"), ca.PEM, filepath.Join(dir, "ca-key.pem"), key); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "federation CA written to %s (keep ca-key.pem offline)\n", dir)
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "", "folder for the CA files")
	initCmd.Flags().IntVar(&years, "years", 5, "validity in years")

	var caDir, identity, out string
	var hosts []string
	var days int
	issue := &cobra.Command{
		Use:   "issue --ca DIR --identity samsyn://node/ID --out PREFIX [--host H ...]",
		Short: "Issue a certificate for a node or the coordinator (PREFIX.pem, PREFIX-key.pem)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if caDir == "" || identity == "" || out == "" {
				return errors.New("--ca, --identity and --out are required")
			}
			ca, err := mtls.LoadCA(filepath.Join(caDir, "ca.pem"), filepath.Join(caDir, "ca-key.pem"))
			if err != nil {
				return err
			}
			leaf, err := ca.Issue(identity, hosts, time.Duration(days)*24*time.Hour)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(out), 0o750); err != nil {
				return err
			}
			if err := mtls.WriteFiles(out+".pem", leaf.CertPEM, out+"-key.pem", leaf.KeyPEM); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "issued %s: %s.pem, %s-key.pem (mode 0600)\n", identity, out, out)
			return nil
		},
	}
	issue.Flags().StringVar(&caDir, "ca", "", "the CA folder (from pki init)")
	issue.Flags().StringVar(&identity, "identity", "", "samsyn://node/<association> or samsyn://coordinator/<id>")
	issue.Flags().StringVar(&out, "out", "", "path prefix of the certificate and key files")
	issue.Flags().StringSliceVar(&hosts, "host", []string{"127.0.0.1", "localhost"}, "host names and IP addresses the certificate is valid for")
	issue.Flags().IntVar(&days, "days", 397, "validity in days")
	var rcaDir, ridentity, rout string
	var rhosts []string
	var rdays int
	rotate := &cobra.Command{
		Use:   "rotate --ca DIR --identity samsyn://node/ID --out PREFIX [--host H ...]",
		Short: "Replace a node's or the coordinator's certificate and key in place (the old kept as .prev); then reload the daemon (SIGHUP)",
		Long: `Issue a new certificate and key for the same identity and put them in place of PREFIX.pem and
PREFIX-key.pem, each written beside the old and renamed over it (the old kept as .prev). The
running daemon keeps its certificate until told to reload: systemctl reload samsyn-node (or
kill -HUP its process). New connections then use the new certificate; open ones carry on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rcaDir == "" || ridentity == "" || rout == "" {
				return errors.New("--ca, --identity and --out are required")
			}
			ca, err := mtls.LoadCA(filepath.Join(rcaDir, "ca.pem"), filepath.Join(rcaDir, "ca-key.pem"))
			if err != nil {
				return err
			}
			leaf, err := ca.Issue(ridentity, rhosts, time.Duration(rdays)*24*time.Hour)
			if err != nil {
				return err
			}
			if err := mtls.RotateFiles(rout+".pem", leaf.CertPEM, rout+"-key.pem", leaf.KeyPEM); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rotated %s: %s.pem, %s-key.pem (previous kept as .prev); reload the daemon (systemctl reload, or SIGHUP)\n", ridentity, rout, rout)
			return nil
		},
	}
	rotate.Flags().StringVar(&rcaDir, "ca", "", "the CA folder (from pki init)")
	rotate.Flags().StringVar(&ridentity, "identity", "", "samsyn://node/<association> or samsyn://coordinator/<id>")
	rotate.Flags().StringVar(&rout, "out", "", "path prefix of the certificate and key files to replace")
	rotate.Flags().StringSliceVar(&rhosts, "host", []string{"127.0.0.1", "localhost"}, "host names and IP addresses the certificate is valid for")
	rotate.Flags().IntVar(&rdays, "days", 397, "validity in days")
	cmd.AddCommand(initCmd, issue, rotate, newKeysCmd(g))
	return cmd
}
