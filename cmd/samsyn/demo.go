package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/samsyn/samsyn/cmd/internal/demo"
	"github.com/samsyn/samsyn/cmd/internal/proc"
)

func newDemoCmd(g *globals) *cobra.Command {
	o := demo.Options{}
	cmd := &cobra.Command{
		Use:   "demo [--dir DIR] [--http ADDR] [--participants N] [--seed S] [--dial-out[=ASSOCIATIONS]]",
		Short: "Build and start a local federation on synthetic data: eight nodes and a coordinator",
		Long: `Build (or reuse) a local federation under DIR: a federation CA and certificates, signing
keys, the signed catalog, SYNTHETIC data for the eight associations imported into eight node
stores, then start a node process per association and a coordinator, each on its own loopback
port (from deploy/federation/federation.yaml). With --dial-out the nodes open no inbound port:
each keeps a mutual-TLS tunnel open to the coordinator's tunnel port instead. Once every node is healthy it seeds the standard
studies and prints "ready <URL>" and the path of credentials.json (a token per role).
Ctrl-C stops every process. All data in the demo is synthetic.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			bin, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find the samsyn binary: %w", err)
			}
			if o.Participants < 50 {
				return fmt.Errorf("--participants %d: expected at least 50", o.Participants)
			}
			o.Binary, o.Out, o.Logger = bin, cmd.OutOrStdout(), logger
			ctx, stop := proc.SignalContext(cmd.Context())
			defer stop()
			return demo.Run(ctx, o)
		},
	}
	cmd.Flags().StringVar(&o.Dir, "dir", "samsyn-demo", "folder of the demo federation (created or reused)")
	cmd.Flags().StringVar(&o.HTTP, "http", "", "address of the coordinator's API and dashboard (default from the reference federation, 127.0.0.1:8080)")
	cmd.Flags().IntVar(&o.PortOffset, "port-offset", 0, "added to every reference port, to run beside another federation")
	cmd.Flags().IntVar(&o.Participants, "participants", 1900, "synthetic participants over the whole federation")
	cmd.Flags().Uint64Var(&o.Seed, "seed", 1, "seed of the synthetic data")
	cmd.Flags().StringSliceVar(&o.DialOut, "dial-out", nil, "nodes that dial out to the coordinator instead of listening: --dial-out alone for every node, or --dial-out=hbs,varna")
	cmd.Flags().Lookup("dial-out").NoOptDefVal = "all"
	return cmd
}
