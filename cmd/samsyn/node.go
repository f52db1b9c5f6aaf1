package main

import "github.com/spf13/cobra"

func newNodeCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "node", Short: "Run and manage an association's node"}
}
