package main

import (
	"fmt"
	"log/slog"
	"os"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/samsyn/samsyn/cmd/internal/proc"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// globals are the flags every command shares.
type globals struct {
	logLevel  string
	logFormat string
}

func (g *globals) logger() (*slog.Logger, error) {
	return proc.Logger(os.Stderr, g.logLevel, g.logFormat)
}

func newRoot() *cobra.Command {
	g := &globals{}
	proc.Version = version
	root := &cobra.Command{
		Use:   "samsyn",
		Short: "Federated analytics for the MIA coordination associations of Stockholm county",
		Long: `Samsyn lets coordination associations learn from their pooled experience without
pooling their data: each association keeps its participants on its own node, and only
approved, anonymised aggregates ever leave it.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(newSynthCmd(g), newNodeCmd(g), newDemoCmd(g), newPKICmd(g), newCatalogCmd(g), newCoordinatorCmd(g), newStudyCmd(g), newSQLCmd(g), newReportCmd(g))
	return root
}

func main() {
	// Nothing Samsyn writes is for other users: files 0640 at most, folders 0750, unless a
	// file is made stricter still (secrets, stores and keys are 0600).
	syscall.Umask(0o027)
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "samsyn:", err)
		os.Exit(1)
	}
}
