package main

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/samsyn/samsyn/cmd/internal/keyfile"
	"github.com/samsyn/samsyn/queries"
)

const defaultCatalogDir = "queries/catalog"

func catalogDir(args []string) string {
	if len(args) > 0 {
		return args[0]
	}
	return defaultCatalogDir
}

func newCatalogCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "catalog",
		Short: "Check, hash, sign and verify the catalog of approved queries",
	}
	lint := &cobra.Command{
		Use:   "lint [DIR]",
		Short: "Validate every entry (strict YAML, view against the schema, dimensions bound to code lists)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := queries.LoadDir(catalogDir(args))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d entries valid\n", c.Dir, len(c.Entries))
			return nil
		},
	}
	hash := &cobra.Command{
		Use:   "hash [DIR]",
		Short: "Print each entry's content hash (SHA-256 of its canonical form)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := queries.LoadDir(catalogDir(args))
			if err != nil {
				return err
			}
			for _, id := range c.IDs() {
				fmt.Fprintf(cmd.OutOrStdout(), "%s  %s\n", c.Entries[id].Hash(), id)
			}
			return nil
		},
	}
	var keyPath string
	sign := &cobra.Command{
		Use:   "sign --key AUTHORITY.key [DIR]",
		Short: "Sign every entry with the catalog authority's key (writes DIR/" + queries.SignaturesFile + ")",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyPath == "" {
				return errors.New("--key is required")
			}
			key, err := keyfile.LoadPrivate(keyPath)
			if err != nil {
				return err
			}
			c, err := queries.LoadDir(catalogDir(args))
			if err != nil {
				return err
			}
			if un := c.Unpinned(); len(un) > 0 {
				return fmt.Errorf("analyses not pinned to a plugin build: %v (run `samsyn catalog pin --plugins DIR %s` first)", un, c.Dir)
			}
			if err := queries.WriteSignatures(c.Dir, queries.Sign(c, key, time.Now())); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed %d entries in %s\n", len(c.Entries), c.Dir)
			return nil
		},
	}
	sign.Flags().StringVar(&keyPath, "key", "", "the catalog authority's private key (PEM, mode 0600)")
	var pluginDir string
	pin := &cobra.Command{
		Use:   "pin --plugins DIR [CATALOG]",
		Short: "Pin every analysis entry to the SHA-256 of its plugin binary in DIR (before signing)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pluginDir == "" {
				return errors.New("--plugins is required: the folder with the samsyn-analysis-* binaries (bin/ after make build)")
			}
			c, err := queries.LoadDir(catalogDir(args))
			if err != nil {
				return err
			}
			ids, err := c.Pin(pluginDir, true)
			if err != nil {
				return err
			}
			for _, id := range ids {
				fmt.Fprintf(cmd.OutOrStdout(), "%s  %s -> %s\n", c.Entries[id].Analysis.SHA256, id, c.Entries[id].Analysis.Plugin)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pinned %d analyses in %s; sign the catalog again\n", len(ids), c.Dir)
			return nil
		},
	}
	pin.Flags().StringVar(&pluginDir, "plugins", "", "folder of the plugin binaries")
	cmd.AddCommand(pin)
	var pubPath string
	verify := &cobra.Command{
		Use:   "verify --pub AUTHORITY.pub [DIR]",
		Short: "Check that every entry is signed by the catalog authority over its current content",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pubPath == "" {
				return errors.New("--pub is required")
			}
			pub, err := keyfile.LoadPublic(pubPath)
			if err != nil {
				return err
			}
			c, _, err := queries.LoadSigned(catalogDir(args), pub)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d entries signed by the catalog authority\n", c.Dir, len(c.Entries))
			return nil
		},
	}
	verify.Flags().StringVar(&pubPath, "pub", "", "the catalog authority's public key (PEM)")
	list := &cobra.Command{
		Use:   "list [DIR]",
		Short: "List the entries: id, kind, title, and each parameter with the values it takes",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := queries.LoadDir(catalogDir(args))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, id := range c.IDs() {
				e := c.Entries[id]
				kind := "table"
				if e.Analysis != nil {
					kind = "analysis (" + e.Analysis.Kind + ")"
				}
				fmt.Fprintf(out, "%s — %s / %s [%s]\n", id, e.Title.SV, e.Title.EN, kind)
				names := make([]string, 0, len(e.Params))
				for n := range e.Params {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, n := range names {
					fmt.Fprintf(out, "    %s: %s\n", n, e.Params[n].Expected())
				}
			}
			return nil
		},
	}
	cmd.AddCommand(lint, hash, sign, verify, list)
	return cmd
}

func newKeysCmd(g *globals) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out PREFIX",
		Short: "Create an ed25519 signing key pair (PREFIX.key with mode 0600, PREFIX.pub)",
		Long: "Create a signing key for the catalog authority, an association's data owner, or the\n" +
			"coordinator's tickets. Keep the .key file private; hand out the .pub file.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out is required")
			}
			if _, err := keyfile.Generate(out+".key", out+".pub"); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s.key (private, 0600) and %s.pub\n", out, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "path prefix of the key files")
	return cmd
}
