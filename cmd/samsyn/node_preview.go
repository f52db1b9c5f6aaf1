package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/samsyn/samsyn/node/config"
	"github.com/samsyn/samsyn/node/executor"
	"github.com/samsyn/samsyn/node/preview"
	"github.com/samsyn/samsyn/node/sqlsrv"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/schemas"
)

func newNodePreviewCmd(g *globals) *cobra.Command {
	var cfgPath, catDir string
	var params []string
	cmd := &cobra.Command{
		Use:   "preview QUERY --config node.yaml [--param k=v ...]",
		Short: "Show what this node would release for a catalog query, beside the true counts (local only)",
		Long: `Run a catalog query on this node's own data and show the protected table exactly as the
coordinator would receive it and, beside it for the local analyst only, the true count of
every cell and why each suppressed cell is suppressed, and what the node would contribute to a
pooled study. Nothing is sent anywhere. While the node serves, the preview runs inside it,
through its local SQL service (as imports do), and is recorded in its audit log.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath == "" {
				return errors.New("--config is required")
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			dir := catDir
			if dir == "" {
				dir = cfg.Abs(cfg.Catalog.Dir)
			}
			if dir == "" {
				dir = defaultCatalogDir
			}
			cat, err := queries.LoadDir(dir)
			if err != nil {
				return err
			}
			e, ok := cat.Get(args[0])
			if !ok {
				return fmt.Errorf("unknown query %q: expected one of %s", args[0], strings.Join(cat.IDs(), ", "))
			}
			values := map[string]string{}
			for _, p := range params {
				k, v, ok := strings.Cut(p, "=")
				if !ok {
					return fmt.Errorf("--param %q: expected name=value", p)
				}
				values[k] = v
			}
			bound, err := e.Bind(values)
			if err != nil {
				return err
			}
			secret, err := cfg.ReadSecret()
			if err != nil {
				return err
			}
			st, err := store.Open(cmd.Context(), cfg.StorePath())
			if errors.Is(err, store.ErrLocked) && cfg.SQL.Listen != "" {
				// The node is serving: it runs the preview on its own store.
				return previewThroughNode(cmd, cfg, e.ID, bound.Text)
			}
			if err != nil {
				return err
			}
			defer st.Close()
			x, err := executor.New(cmd.Context(), st, executor.Options{Association: cfg.Association, Secret: secret,
				Policy: cfg.EffectivePolicy(), Timeout: cfg.Query.Timeout, Threads: cfg.Query.Threads, Registerer: prometheus.NewRegistry(),
				Plugins: executor.Plugins{Dir: cfg.PluginDir(), Timeout: cfg.Plugins.Timeout, MemoryLimit: uint64(cfg.Plugins.MemoryLimitMB) << 20}})
			if err != nil {
				return err
			}
			defer x.Close()
			return preview.Render(cmd.Context(), cmd.OutOrStdout(), x, e, bound, cfg.Association, federationOf(cfg))
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the node's node.yaml")
	cmd.Flags().StringVar(&catDir, "catalog", "", "catalog folder (default: the node's catalog.dir, else queries/catalog)")
	cmd.Flags().StringArrayVar(&params, "param", nil, "a query parameter as name=value (repeat)")
	return cmd
}

// federationOf lists the associations of the node's federation: its pinned aggregation keys,
// or every association of the code list.
func federationOf(cfg *config.Config) []string {
	if fed := cfg.Aggregation.Federation(); len(fed) > 0 {
		return fed
	}
	assoc, _ := schemas.V1().CodeList("association")
	return assoc.Values()
}

// previewThroughNode asks the serving node to run the preview on its own store.
func previewThroughNode(cmd *cobra.Command, cfg *config.Config, query string, params map[string]string) error {
	body, _ := json.Marshal(sqlsrv.PreviewRequest{Query: query, Params: params})
	fmt.Fprintf(cmd.ErrOrStderr(), "the node is serving: asking it for the preview at %s\n", cfg.SQL.Listen)
	raw, err := localAction(cmd, cfg, sqlsrv.ActionPreview, body)
	if err != nil {
		return fmt.Errorf("preview through the node: %w", err)
	}
	var reply sqlsrv.PreviewReply
	if err := json.Unmarshal(raw, &reply); err != nil {
		return err
	}
	if reply.Error != "" {
		return errors.New(reply.Error)
	}
	_, err = io.WriteString(cmd.OutOrStdout(), reply.Text)
	return err
}
