package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	cconfig "github.com/samsyn/samsyn/coordinator/config"
	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/node/backup"
	"github.com/samsyn/samsyn/node/config"
)

func nodePaths(cfgPath string) (backup.Paths, error) {
	if cfgPath == "" {
		return backup.Paths{}, errors.New("--config is required")
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return backup.Paths{}, err
	}
	return backup.Paths{Association: cfg.Association, Store: cfg.StorePath(), AuditLog: cfg.Abs(cfg.AuditLog)}, nil
}

func newNodeBackupCmd(*globals) *cobra.Command {
	var cfgPath, out string
	cmd := &cobra.Command{
		Use:   "backup --config node.yaml --out DIR",
		Short: "Back up a stopped node's store and audit log into DIR, with a manifest of their SHA-256",
		Long: `Back up a stopped node's store and audit log into a new folder DIR, with a manifest (the
files' SHA-256, the audit log's head, the data snapshot). Stop the node first: a serving node
holds its store, so the backup is refused with the reason. The node secret is not in the
backup: keep it apart, as it was given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := nodePaths(cfgPath)
			if err != nil {
				return err
			}
			if out == "" {
				return errors.New("--out is required: a new folder for the backup")
			}
			m, err := backup.Backup(cmd.Context(), p, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backed up %s (snapshot %s, audit log to entry %d) into %s\n", m.Association, m.Snapshot, m.AuditSeq, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the node's node.yaml")
	cmd.Flags().StringVar(&out, "out", "", "a new folder for the backup")
	return cmd
}

func newNodeRestoreCmd(*globals) *cobra.Command {
	var cfgPath, from string
	cmd := &cobra.Command{
		Use:   "restore --config node.yaml --from DIR",
		Short: "Restore a stopped node's store from a backup, keeping its audit history",
		Long: `Restore a stopped node's store from a backup made by "samsyn node backup". The backup is
checked first (every file's SHA-256, the audit chain); the current store is kept beside the
restored one (STORE.before-restore-TIME). The audit log is history and is not rolled back: if
the current log still holds the backup's last entry it is kept as it is, so the node remembers
every ticket and cohort it answered since; a missing log is restored from the backup; a log that
does not hold the backup's last entry is a conflict, refused. The restore is audited.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := nodePaths(cfgPath)
			if err != nil {
				return err
			}
			if from == "" {
				return errors.New("--from is required: the backup folder")
			}
			m, err := backup.Restore(cmd.Context(), p, from)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s to snapshot %s (backed up %s); start the node again\n", m.Association, m.Snapshot, m.CreatedAt.Format("2006-01-02 15:04"))
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the node's node.yaml")
	cmd.Flags().StringVar(&from, "from", "", "the backup folder")
	return cmd
}

func newCoordinatorBackupCmd(*globals) *cobra.Command {
	var cfgPath, out string
	cmd := &cobra.Command{
		Use:   "backup --config coordinator.yaml --out FILE",
		Short: "Back up the coordinator's state to FILE (also while it runs); restore by putting FILE in its place while it is stopped",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" || out == "" {
				return errors.New("--config and --out are required")
			}
			cfg, err := cconfig.Load(cfgPath)
			if err != nil {
				return err
			}
			if err := state.Backup(cmd.Context(), cfg.Abs(cfg.Store), out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backed up the coordinator's state to %s (integrity checked)\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the coordinator's coordinator.yaml")
	cmd.Flags().StringVar(&out, "out", "", "the backup file (must not exist)")
	return cmd
}
