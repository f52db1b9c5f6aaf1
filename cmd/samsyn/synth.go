package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/samsyn/samsyn/cmd/internal/proc"
	"github.com/samsyn/samsyn/schemas/synth"
)

func newSynthCmd(_ *globals) *cobra.Command {
	var (
		out          string
		opts         synth.Options
		associations []string
	)
	cmd := &cobra.Command{
		Use:   "synth --out DIR [--participants N | --per-association N] [--seed S] [--format csv|parquet] [--associations a,b]",
		Short: "Write SYNTHETIC association exports (invented participants, for demos, tests and benchmarks)",
		Long: `Write SYNTHETIC association exports: one folder per coordination association under DIR, one
file per table (participant, episode, followup, survey), in the same form a real export
takes, so "samsyn node import" reads them like any other.

Every person in these files is invented. The data is calibrated to look like the MIA Vidare
project (2020-06-01 to 2022-09-30, about 1,900 participants over eight associations), but no
value comes from, or describes, a real person. The personnummer are computed with valid
check digits and are unique, but they are not checked against any register and may happen to
equal a real person's: never mix these files with real data.

The same seed and options give byte-identical files. Memory stays bounded at any size;
--per-association 1000000 writes the benchmark federation.`,
		Example: `  samsyn synth --out ./synthetic
  samsyn synth --out ./bench --per-association 1000000 --format parquet
  samsyn synth --out ./hbs --associations hbs --seed 42`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out is required: the folder to write the association folders into")
			}
			if cmd.Flags().Changed("participants") && opts.Participants <= 0 {
				return fmt.Errorf("--participants must be a positive number, got %d", opts.Participants)
			}
			if cmd.Flags().Changed("per-association") && opts.PerAssociation <= 0 {
				return fmt.Errorf("--per-association must be a positive number, got %d", opts.PerAssociation)
			}
			if cmd.Flags().Changed("per-association") {
				if cmd.Flags().Changed("participants") {
					return errors.New("use either --participants (a federation total) or --per-association, not both")
				}
				opts.Participants = 0
			}
			for _, a := range associations {
				if a = strings.TrimSpace(a); a != "" {
					opts.Associations = append(opts.Associations, a)
				}
			}

			ctx, stop := proc.SignalContext(cmd.Context())
			defer stop()
			progress := proc.NewProgress(os.Stderr)
			var (
				mu         sync.Mutex
				done, all  = map[string]int{}, map[string]int{}
				sumDone    int64
				sumPlanned int64
			)
			opts.Progress = func(assoc string, d, total int) {
				mu.Lock()
				sumDone += int64(d - done[assoc])
				sumPlanned += int64(total - all[assoc])
				done[assoc], all[assoc] = d, total
				n, t := sumDone, sumPlanned
				mu.Unlock()
				progress.Update("synthetic participants", n, t)
			}

			sum, err := synth.Write(ctx, out, opts)
			progress.Done()
			if errors.Is(err, synth.ErrOutputExists) {
				return fmt.Errorf("%w; use --force to replace the exports in it", err)
			}
			if err != nil {
				return err
			}
			return sum.Print(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "out", "o", "", "folder to write into (one sub-folder per association)")
	f.IntVar(&opts.Participants, "participants", synth.DefaultParticipants, "participants in the whole federation, split over the associations by size")
	f.IntVar(&opts.PerAssociation, "per-association", 0, "participants in each association instead of a federation total (for benchmarks)")
	f.Uint64Var(&opts.Seed, "seed", 1, "seed: the same seed and options give identical files")
	f.StringVar(&opts.Format, "format", "csv", "file format: "+strings.Join(synth.Formats, " or "))
	f.StringSliceVar(&associations, "associations", nil, "only these associations (comma-separated ids; default all)")
	f.BoolVar(&opts.Overwrite, "force", false, "replace the exports in association folders that already exist")
	return cmd
}
