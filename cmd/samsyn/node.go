package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/samsyn/samsyn/cmd/internal/proc"
	"github.com/samsyn/samsyn/node/config"
	"github.com/samsyn/samsyn/node/importer"
	"github.com/samsyn/samsyn/node/sqlsrv"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries/secagg"
	"github.com/samsyn/samsyn/schemas"
)

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Set up and run an association's node",
	}
	cmd.AddCommand(newNodeInitCmd(g), newNodeImportCmd(g), newNodeStatusCmd(g), newNodeServeCmd(g), newNodeAuditCmd(g), newNodePreviewCmd(g), newNodeAggKeyCmd(g), newNodeBackupCmd(g), newNodeRestoreCmd(g))
	return cmd
}

func newNodeAggKeyCmd(g *globals) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "aggregation-key --config node.yaml",
		Short: "Print this node's public aggregation key, for every node's aggregation.peers",
		Long: "Print the X25519 public key this node uses for secure aggregation. It is derived from the\n" +
			"node secret, so it changes only with the secret. Every node of the federation pins every\n" +
			"association's key under aggregation.peers in its node.yaml; the coordinator never carries them.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			secret, err := cfg.ReadSecret()
			if err != nil {
				return err
			}
			key, err := secagg.DeriveKey(secret)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", cfg.Association, secagg.PublicHex(key.PublicKey()))
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the node's node.yaml")
	return cmd
}

func newNodeInitCmd(g *globals) *cobra.Command {
	var association, dir string
	assoc, _ := schemas.V1().CodeList("association")
	cmd := &cobra.Command{
		Use:   "init --association ID --dir DIR",
		Short: "Create a node: node.yaml, a secret (0600) and an empty store",
		Long: "Create a node for one coordination association in DIR: node.yaml, a fresh random node\n" +
			"secret (mode 0600) and an empty store at the current schema version.\n\n" +
			"Associations: " + strings.Join(assoc.Values(), ", "),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if association == "" || dir == "" {
				return errors.New("--association and --dir are required")
			}
			cfg, err := config.Scaffold(dir, association)
			if err != nil {
				return err
			}
			st, err := store.Open(cmd.Context(), cfg.StorePath())
			if err != nil {
				return err
			}
			if err := st.Close(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created node %s in %s\n  config %s\n  secret %s (keep it; mode 0600)\n  store  %s (schema version %d)\n",
				association, dir, cfg.Path(), cfg.SecretPath(), cfg.StorePath(), schemas.Version)
			return nil
		},
	}
	cmd.Flags().StringVar(&association, "association", "", "association id ("+strings.Join(assoc.Values(), ", ")+")")
	cmd.Flags().StringVar(&dir, "dir", "", "folder to create the node in")
	return cmd
}

func newNodeImportCmd(g *globals) *cobra.Command {
	var cfgPath, table string
	cmd := &cobra.Command{
		Use:   "import --config node.yaml --table TABLE FILE...",
		Short: "Validate and import export files (CSV or Parquet) into the node's store",
		Long: `Import one table from one or more files, all or nothing: every row of every file is checked
against the schema and code lists first, and any problem leaves the store untouched and is
reported as file:line: column: found: expected. Re-importing the same rows changes nothing.

CSV files are UTF-8 with a header row, separated by comma or semicolon; Swedish header names
(kön, kommun, födelseår, ...) are accepted. Each row names its participant by personnummer
(replaced on import by a keyed hash; never stored) or, without consent, by anonymous_id.

Tables: ` + strings.Join(schemas.V1().TableNames(), ", ") + ` (import participant first).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			if cfgPath == "" || table == "" {
				return errors.New("--config and --table are required")
			}
			logger, err := g.logger()
			if err != nil {
				return err
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			secret, err := cfg.ReadSecret()
			if err != nil {
				return err
			}
			ctx, stop := proc.SignalContext(cmd.Context())
			defer stop()
			st, err := store.Open(ctx, cfg.StorePath())
			if errors.Is(err, store.ErrLocked) && cfg.SQL.Listen != "" {
				// DuckDB has one writer: while the node serves, it imports.
				return importThroughNode(cmd, cfg, table, files)
			}
			if err != nil {
				return err
			}
			defer st.Close()
			bar := proc.NewProgress(os.Stderr)
			im := importer.New(st, logger, prometheus.NewRegistry())
			res, err := im.Import(ctx, importer.Options{
				Table: table, Files: files, Association: cfg.Association, Secret: secret,
				Progress: bar.Update,
			})
			bar.Done()
			if err != nil {
				return err
			}
			printImport(cmd, res, files)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the node's node.yaml")
	cmd.Flags().StringVar(&table, "table", "", "table to import: "+strings.Join(schemas.V1().TableNames(), ", "))
	return cmd
}

func newNodeStatusCmd(g *globals) *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "status --config node.yaml",
		Short: "Show the node's store: rows per table, snapshot and import log",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			st, err := store.Open(cmd.Context(), cfg.StorePath())
			if err != nil {
				return err
			}
			defer st.Close()
			out := cmd.OutOrStdout()
			snap, err := st.Snapshot(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "node %s, store %s, schema version %d, snapshot %s\n", cfg.Association, cfg.StorePath(), schemas.Version, snap)
			for _, t := range schemas.V1().TableNames() {
				n, err := st.Count(cmd.Context(), t)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "  %-12s %10d rows\n", t, n)
			}
			imports, err := st.Imports(cmd.Context())
			if err != nil {
				return err
			}
			for _, r := range imports {
				fmt.Fprintf(out, "  import %d  %s  %-11s %8d read %8d changed  %s\n", r.Seq, r.ImportedAt.Format("2006-01-02 15:04:05"), r.Table, r.RowsRead, r.RowsChanged, strings.Join(r.Files, ", "))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the node's node.yaml")
	return cmd
}

func printImport(cmd *cobra.Command, res *importer.Result, files []string) {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = filepath.Base(f)
	}
	if res.Unchanged {
		fmt.Fprintf(cmd.OutOrStdout(), "%s: %d rows read from %s, all already in the store: nothing changed (snapshot %s)\n",
			res.Table, res.Rows, strings.Join(names, ", "), res.Snapshot)
		return
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: %d rows read from %s, %d written (snapshot %s)\n",
		res.Table, res.Rows, strings.Join(names, ", "), res.Changed, res.Snapshot)
}

// localAction calls one of the serving node's local actions on its SQL service (loopback or
// a Unix socket, the analysts' token) and returns the body of its one answer.
func localAction(cmd *cobra.Command, cfg *config.Config, action string, body []byte) ([]byte, error) {
	token, err := cfg.ReadSQLToken()
	if err != nil {
		return nil, err
	}
	target := cfg.SQL.Listen
	if p, ok := strings.CutPrefix(target, "unix:"); ok {
		target = "unix://" + p
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(cmd.Context(), "authorization", "Bearer "+token)
	stream, err := flight.NewClientFromConn(conn, nil).DoAction(ctx, &flight.Action{Type: action, Body: body})
	if err != nil {
		return nil, err
	}
	res, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	return res.Body, nil
}

// importThroughNode asks the running node to import files on this machine.
func importThroughNode(cmd *cobra.Command, cfg *config.Config, table string, files []string) error {
	var err error
	abs := make([]string, len(files))
	for i, f := range files {
		if abs[i], err = filepath.Abs(f); err != nil {
			return err
		}
	}
	body, _ := json.Marshal(sqlsrv.ImportRequest{Table: table, Files: abs})
	fmt.Fprintf(cmd.ErrOrStderr(), "the node is serving: handing the import to it at %s\n", cfg.SQL.Listen)
	raw, err := localAction(cmd, cfg, sqlsrv.ActionImport, body)
	if err != nil {
		return fmt.Errorf("import through the node: %w", err)
	}
	var reply sqlsrv.ImportReply
	if err := json.Unmarshal(raw, &reply); err != nil {
		return err
	}
	switch {
	case reply.Error != "":
		return errors.New(reply.Error)
	case reply.Total > 0:
		return &importer.ValidationError{Problems: reply.Problems, Total: reply.Total}
	}
	printImport(cmd, reply.Result, files)
	return nil
}
