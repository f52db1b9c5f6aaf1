package main

import (
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/samsyn/samsyn/coordinator/report"
)

func newReportCmd(*globals) *cobra.Command {
	cf := &clientFlags{}
	var period, lang, out, chromium string
	cmd := &cobra.Command{
		Use:   "report --period P --lang sv|en --out FILE.pdf|FILE.html",
		Short: "Make the steering group's meeting report (PDF or HTML) from released results",
		Long: `Make the steering group's meeting report from released, protected results only: the targets
per association and the progress against each plan, the map, the patterns, the trends, what
works for whom, and notes on method and protection; every figure says which associations it
covers. The figures are the dashboard's own: a headless Chromium (apt-get install chromium)
draws the dashboard's pages one after the other.

--period is "project" (the whole project period), a year (2021) or FROM..TO
(2021-01-01..2021-12-31): the period of a released study. The token must be allowed to read
results (steering group or evaluator).`,
		Example: `  samsyn report --period project --lang sv --out lägesrapport.pdf
  samsyn report --period 2022 --lang en --out status-report-2022.html`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out is required: FILE.pdf or FILE.html")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			o := report.Options{Coordinator: c.base, Token: c.token, Period: period, Lang: lang, Out: out, Chromium: chromium, Timeout: 3 * time.Minute}
			if t, ok := c.http.Transport.(*http.Transport); ok {
				o.TLS = t.TLSClientConfig
			}
			if err := report.Render(cmd.Context(), o); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", out)
			return nil
		},
	}
	cf.add(cmd)
	cmd.Flags().StringVar(&period, "period", "project", `"project", a year (2021) or FROM..TO`)
	cmd.Flags().StringVar(&lang, "lang", "sv", "sv or en")
	cmd.Flags().StringVar(&out, "out", "", "FILE.pdf or FILE.html")
	cmd.Flags().StringVar(&chromium, "chromium", "", "the Chromium binary (found on PATH when empty)")
	return cmd
}
