package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/samsyn/samsyn/node/config"
	"github.com/samsyn/samsyn/node/executor"
	"github.com/samsyn/samsyn/node/preview"
	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/disclosure"
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
every cell and why each suppressed cell is suppressed. Nothing is sent anywhere. The store
must not be in use by a running node (stop it, or preview on a copy of the store).`,
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
			if err != nil {
				return err
			}
			defer st.Close()
			x, err := executor.New(cmd.Context(), st, executor.Options{Association: cfg.Association, Secret: secret,
				Policy: cfg.EffectivePolicy(), Timeout: cfg.Query.Timeout, Registerer: prometheus.NewRegistry()})
			if err != nil {
				return err
			}
			defer x.Close()
			truth, err := x.Aggregate(cmd.Context(), e, bound)
			if err != nil {
				return err
			}
			defer truth.Release()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s (%s) on node %s, parameters %v\n", e.Title.SV, e.ID, cfg.Association, bound.Text)
			res, err := x.Run(cmd.Context(), e, bound)
			var own arrow.Record
			switch {
			case errors.Is(err, disclosure.ErrTooSparse):
				fmt.Fprintf(out, "this node's own table (a cohort of one): REFUSED, it would release nothing: %v\n", err)
			case err != nil:
				return err
			default:
				defer res.Table.Release()
				own = res.Table
				fmt.Fprintf(out, "this node's own table (a cohort of one): %d cells, %d suppressed (snapshot %s)\n", res.Report.Cells, res.Report.Suppressed, res.Snapshot)
			}
			fmt.Fprintf(out, "in a study across associations the node instead contributes every count perturbed and unsuppressed,\n"+
				"masked so that only the cohort's sum is ever seen; the threshold is applied once, to that sum.\n\n")
			rows, err := preview.Compare(e, truth, own, x.Policy())
			if err != nil {
				return err
			}
			fed := cfg.Aggregation.Federation()
			if len(fed) == 0 {
				assoc, _ := schemas.V1().CodeList("association")
				fed = assoc.Values()
			}
			layout, err := e.Layout()
			if err != nil {
				return err
			}
			c, err := x.Contribute(cmd.Context(), e, bound, fed)
			if err != nil {
				return err
			}
			preview.WithContribution(rows, layout, c.Vector)
			return preview.Print(out, e, rows)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the node's node.yaml")
	cmd.Flags().StringVar(&catDir, "catalog", "", "catalog folder (default: the node's catalog.dir, else queries/catalog)")
	cmd.Flags().StringArrayVar(&params, "param", nil, "a query parameter as name=value (repeat)")
	return cmd
}
