package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newSynthCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "synth",
		Short: "Write synthetic association exports (not yet built)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("synth is not built yet")
		},
	}
}
