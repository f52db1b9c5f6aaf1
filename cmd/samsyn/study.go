package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/samsyn/samsyn/cmd/internal/keyfile"
	"github.com/samsyn/samsyn/coordinator/api"
	"github.com/samsyn/samsyn/coordinator/study"
)

// apiClient talks to the coordinator's HTTP API.
type apiClient struct {
	base, token string
	http        *http.Client
}

type clientFlags struct{ coordinator, token, ca string }

func (f *clientFlags) add(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&f.coordinator, "coordinator", os.Getenv("SAMSYN_COORDINATOR"), "coordinator URL (env SAMSYN_COORDINATOR)")
	cmd.PersistentFlags().StringVar(&f.token, "token", "", "bearer token (env SAMSYN_TOKEN; prefer the environment: flags show in ps)")
	cmd.PersistentFlags().StringVar(&f.ca, "ca", "", "CA certificate to trust for an HTTPS coordinator")
}

func (f *clientFlags) client() (*apiClient, error) {
	token := f.token
	if token == "" {
		token = os.Getenv("SAMSYN_TOKEN")
	}
	if f.coordinator == "" {
		return nil, errors.New("no coordinator: give --coordinator URL or set SAMSYN_COORDINATOR")
	}
	if token == "" {
		return nil, errors.New("no token: set SAMSYN_TOKEN (or --token)")
	}
	hc := &http.Client{Timeout: 2 * time.Minute}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", f.ca)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	return &apiClient{base: strings.TrimRight(f.coordinator, "/"), token: token, http: hc}, nil
}

// do sends a request and decodes a JSON answer into out (unless out is nil); API errors
// become Go errors with the server's code and message.
func (c *apiClient) do(ctx context.Context, method, path, accept string, body []byte, out any) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error.Code != "" {
			return nil, fmt.Errorf("%s (%d %s)", e.Error.Message, resp.StatusCode, e.Error.Code)
		}
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		return raw, json.Unmarshal(raw, out)
	}
	return raw, nil
}

func newStudyCmd(g *globals) *cobra.Command {
	cf := &clientFlags{}
	cmd := &cobra.Command{Use: "study", Short: "Submit, approve, follow and download studies through the coordinator"}
	cf.add(cmd)

	submit := &cobra.Command{
		Use:   "submit FILE",
		Short: "Submit a study file; prints the new study's id on the last line",
		Long: `Submit a study file; prints the new study's id on the last line.

The study file (YAML; unknown fields are refused):

  title: Utfall 2021 per kommun            # required, at most 300 characters
  purpose: Styrgruppens årsuppföljning     # required: why the study is needed
  queries:                                 # 1–100 catalog entries (samsyn catalog list)
    - id: exits_by_municipality
      params: {from: 2021-01-01, to: 2021-12-31}   # periods on the grid: quarters, years, the project
    - {id: what_works, params: {from: 2020-04-01, to: 2022-09-30}}
  associations: all                        # or a list: [hbs, varna]; a model needs two or more
  on_node_failure: partial                 # partial (release what answered, marked) or fail
  standing: {months: 12, schedule: new_data}   # optional: approved once, rerun each quarter
                                           # (quarterly) or when a node's data changes (new_data)

Each association's data owner then approves (samsyn study approve) or refuses.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if _, err := study.ParseRequest(args[0], raw); err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			var s study.Study
			if _, err := c.do(cmd.Context(), "POST", "/api/v1/studies", "", raw, &s); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "submitted %q with %d queries; awaiting approval from %s\n%s\n", s.Title, len(s.Queries), strings.Join(s.Associations, ", "), s.ID)
			return nil
		},
	}

	var association, keyPath, reason string
	approve := &cobra.Command{
		Use:   "approve ID --association A --key FILE",
		Short: "Approve a study for an association by signing every query with the data owner's key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if association == "" || keyPath == "" {
				return errors.New("--association and --key are required")
			}
			key, err := keyfile.LoadPrivate(keyPath)
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			var st api.StudyStatus
			if _, err := c.do(cmd.Context(), "GET", "/api/v1/studies/"+args[0], "", nil, &st); err != nil {
				return err
			}
			// Say what is being approved, in words, before signing it.
			var cat []struct {
				ID    string            `json:"id"`
				Title map[string]string `json:"title"`
			}
			_, _ = c.do(cmd.Context(), "GET", "/api/v1/catalog", "", nil, &cat)
			titles := map[string]string{}
			for _, e := range cat {
				titles[e.ID] = e.Title["sv"]
			}
			if !slices.Contains(st.Associations, association) {
				return fmt.Errorf("study %s does not ask %s (it asks %s)", st.ID, association, strings.Join(st.Associations, ", "))
			}
			w := cmd.ErrOrStderr()
			fmt.Fprintf(w, "You approve, for %s, the study %q\n  purpose: %s\n  evaluator: %s; associations: %s\n", association, st.Title, st.Purpose, st.Evaluator, strings.Join(st.Associations, ", "))
			for i, q := range st.Queries {
				fmt.Fprintf(w, "  %d. %s (%s)%s\n", i+1, titles[q.ID], q.ID, periodWords(q.Params))
			}
			body, _ := json.Marshal(api.Decision{Decision: study.Approve, Signatures: study.SignApproval(st.Study, association, key)})
			var after study.Study
			if _, err := c.do(cmd.Context(), "POST", "/api/v1/studies/"+args[0]+"/approvals", "", body, &after); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s approved study %s (%d queries); the study is %s\n", association, after.ID, len(after.Queries), after.State)
			return nil
		},
	}
	approve.Flags().StringVar(&association, "association", "", "the association you approve for")
	approve.Flags().StringVar(&keyPath, "key", "", "the association data owner's private key")

	refuse := &cobra.Command{
		Use:   "refuse ID --association A --reason TEXT",
		Short: "Refuse a study for an association (final)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return errors.New("--reason is required: say why")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			body, _ := json.Marshal(api.Decision{Decision: study.Refuse, Reason: reason})
			var after study.Study
			if _, err := c.do(cmd.Context(), "POST", "/api/v1/studies/"+args[0]+"/approvals", "", body, &after); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "refused study %s; the study is %s\n", after.ID, after.State)
			return nil
		},
	}
	refuse.Flags().StringVar(&association, "association", "", "the association you refuse for (must match your token's role)")
	refuse.Flags().StringVar(&reason, "reason", "", "why the association refuses")

	var watch bool
	status := &cobra.Command{
		Use:   "status ID [--watch]",
		Short: "Show a study's state, approvals and per-node progress",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			f, isFile := out.(*os.File)
			tty := isFile && term.IsTerminal(int(f.Fd()))
			lines := 0
			for {
				var st api.StudyStatus
				if _, err := c.do(cmd.Context(), "GET", "/api/v1/studies/"+args[0], "", nil, &st); err != nil {
					return err
				}
				text := renderStatus(&st)
				if watch && tty && lines > 0 {
					fmt.Fprintf(out, "\x1b[%dA\x1b[J", lines)
				}
				fmt.Fprint(out, text)
				lines = strings.Count(text, "\n")
				if !watch || st.State.Final() {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	status.Flags().BoolVar(&watch, "watch", false, "follow the study until it ends, with live per-node progress")

	var queryFlag, format, outPath string
	results := &cobra.Command{
		Use:   "results ID [--query Q] [--format table|csv|json|arrow|parquet|xlsx] [--out FILE]",
		Short: "Download a released study's results",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var list []api.ResultInfo
			if _, err := c.do(cmd.Context(), "GET", "/api/v1/studies/"+args[0]+"/results", "", nil, &list); err != nil {
				return err
			}
			if len(list) == 0 {
				return fmt.Errorf("study %s has no released results yet (see samsyn study status %s)", args[0], args[0])
			}
			q := queryFlag
			if q == "" {
				if len(list) > 1 && format != "table" {
					ids := make([]string, len(list))
					for i, r := range list {
						ids[i] = r.QueryID
					}
					return fmt.Errorf("the study has %d results: choose one with --query (%s)", len(list), strings.Join(ids, ", "))
				}
				q = list[0].QueryID
			}
			switch format {
			case "table":
				var t api.Table
				if _, err := c.do(cmd.Context(), "GET", "/api/v1/studies/"+args[0]+"/results/"+q, "application/json", nil, &t); err != nil {
					return err
				}
				return writeOut(outPath, cmd.OutOrStdout(), []byte(renderTable(&t)))
			case "csv", "json", "arrow", "parquet", "xlsx":
				raw, err := c.do(cmd.Context(), "GET", "/api/v1/studies/"+args[0]+"/results/"+q+"?format="+format, "", nil, nil)
				if err != nil {
					return err
				}
				if (format == "parquet" || format == "xlsx" || format == "arrow") && outPath == "" {
					if f, ok := cmd.OutOrStdout().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
						return fmt.Errorf("%s is binary: give --out FILE", format)
					}
				}
				return writeOut(outPath, cmd.OutOrStdout(), raw)
			default:
				return fmt.Errorf("--format %q: expected table, csv, json, arrow, parquet or xlsx", format)
			}
		},
	}
	results.Flags().StringVar(&queryFlag, "query", "", "the query id (or index) of the result")
	results.Flags().StringVar(&format, "format", "table", "table, csv, json, arrow, parquet or xlsx")
	results.Flags().StringVar(&outPath, "out", "", "write to FILE instead of standard output")
	var stateFlag string
	var awaitingMe bool
	list := &cobra.Command{
		Use:   "list [--state S]",
		Short: "List the studies you may see: state, title, created, and who has not decided",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var all []study.Study
			if _, err := c.do(cmd.Context(), "GET", "/api/v1/studies", "", nil, &all); err != nil {
				return err
			}
			mine := ""
			if awaitingMe {
				var who struct{ Role string }
				if _, err := c.do(cmd.Context(), "GET", "/api/v1/whoami", "", nil, &who); err != nil {
					return err
				}
				var ok bool
				if mine, ok = strings.CutPrefix(who.Role, api.RolePrefix); !ok {
					return fmt.Errorf("--awaiting-me is for an association's data owner; this token's role is %s", who.Role)
				}
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tCREATED\tTITLE\tWAITING FOR")
			for _, s := range all {
				if stateFlag != "" && string(s.State) != stateFlag {
					continue
				}
				waiting := ""
				if s.State == study.AwaitingApproval {
					var st api.StudyStatus
					if _, err := c.do(cmd.Context(), "GET", "/api/v1/studies/"+s.ID, "", nil, &st); err == nil {
						decided := map[string]bool{}
						for _, a := range st.Approvals {
							decided[a.Association] = true
						}
						var open []string
						for _, a := range st.Associations {
							if !decided[a] {
								open = append(open, a)
							}
						}
						waiting = strings.Join(open, ", ")
					}
				}
				if mine != "" && (s.State != study.AwaitingApproval || !slices.Contains(strings.Split(waiting, ", "), mine)) {
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.State, s.CreatedAt.Local().Format("2006-01-02 15:04"), s.Title, waiting)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&stateFlag, "state", "", "only studies in this state (awaiting_approval, running, released, failed, refused)")
	list.Flags().BoolVar(&awaitingMe, "awaiting-me", false, "only studies waiting for your association's decision (a data owner's token)")
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Withdraw your association's standing approval of a standing study: no later run asks it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var after study.Study
			if _, err := c.do(cmd.Context(), "POST", "/api/v1/studies/"+args[0]+"/revoke", "", nil, &after); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked the standing approval of %s; no later run asks your association\n", after.ID)
			return nil
		},
	}
	cmd.AddCommand(submit, approve, refuse, status, results, list, revoke)
	return cmd
}

// periodWords says a from/to pair in words.
func periodWords(p map[string]string) string {
	from, to := p["from"], p["to"]
	if from == "" || to == "" {
		if len(p) == 0 {
			return ""
		}
		return fmt.Sprintf(", %v", p)
	}
	if y := from[:4]; from == y+"-01-01" && to == y+"-12-31" {
		return ", year " + y
	}
	return ", " + from + " to " + to
}

func writeOut(path string, w io.Writer, raw []byte) error {
	if path == "" {
		_, err := w.Write(raw)
		return err
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s (%d bytes)\n", path, len(raw))
	return nil
}

func renderStatus(st *api.StudyStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "study %s: %s\n  %s — %s\n  evaluator %s, %d queries, on node failure: %s\n", st.ID, st.State, st.Title, st.Purpose, st.Evaluator, len(st.Queries), st.OnNodeFailure)
	decided := map[string]study.Approval{}
	for _, a := range st.Approvals {
		decided[a.Association] = a
	}
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  association\tapproval\tnode\t")
	assocs := append([]string{}, st.Associations...)
	sort.Strings(assocs)
	for _, a := range assocs {
		dec := "waiting"
		if d, ok := decided[a]; ok {
			dec = string(d.Decision)
			if d.Reason != "" {
				dec += " (" + d.Reason + ")"
			}
		}
		node := "-"
		if p, ok := st.Progress[a]; ok {
			node = p.State
			if p.Attempts > 1 {
				node += fmt.Sprintf(" (attempt %d)", p.Attempts)
			}
			if p.Error != "" {
				node += ": " + p.Error
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t\n", a, dec, node)
	}
	tw.Flush()
	if len(st.Results) > 0 {
		fmt.Fprintf(&b, "  %d results released\n", len(st.Results))
	}
	return b.String()
}

func renderTable(t *api.Table) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s)\n", t.Title.SV, t.Query)
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', tabwriter.AlignRight)
	for _, d := range t.Dimensions {
		fmt.Fprintf(tw, "%s\t", d.Title.SV)
	}
	count, fewer := "antal", "färre än 5"
	for _, m := range t.Measures {
		switch m.Name {
		case "survival":
			count, fewer = "i risk", "färre än 10"
		case "coefficient":
			count = "deltagare"
		}
	}
	fmt.Fprint(tw, count+"\t")
	for _, m := range t.Measures {
		fmt.Fprintf(tw, "%s\t", m.Title.SV)
	}
	fmt.Fprintln(tw)
	for _, r := range t.Rows {
		for _, d := range t.Dimensions {
			code := r[d.Name].(string)
			label := t.Labels[d.Name][code].SV
			if label == "" {
				label = code
			}
			fmt.Fprintf(tw, "%s\t", label)
		}
		switch {
		case r["missing"] == true:
			fmt.Fprint(tw, "saknas\t")
		case r["n"] == nil:
			fmt.Fprint(tw, fewer+"\t")
		default:
			fmt.Fprintf(tw, "%v\t", r["n"])
		}
		for _, m := range t.Measures {
			switch v := r[m.Name].(type) {
			case nil:
				fmt.Fprint(tw, "–\t")
			case float64:
				fmt.Fprintf(tw, "%s\t", strconv.FormatFloat(v, 'g', 4, 64))
			default:
				fmt.Fprintf(tw, "%v\t", v)
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	var checks struct {
		Associations []string `json:"associations"`
		Missing      []string `json:"missing_associations"`
		Pooled       bool     `json:"pooled"`
		Model        *struct {
			N          int64   `json:"n"`
			Events     int64   `json:"events"`
			Deviance   float64 `json:"deviance"`
			Iterations int     `json:"iterations"`
			Converged  bool    `json:"converged"`
		} `json:"model"`
	}
	if json.Unmarshal(t.Checks, &checks) == nil {
		how := "skyddad i förbundets nod"
		if checks.Pooled {
			how = "skyddad en gång, efter säker summering"
		}
		fmt.Fprintf(&b, "\n%d förbund i resultatet (%s)", len(checks.Associations), how)
		if len(checks.Missing) > 0 {
			fmt.Fprintf(&b, "; svarade inte: %s", strings.Join(checks.Missing, ", "))
		}
		b.WriteString(". \"saknas\": bara förbund utanför resultatet kunde ha deltagare där.\n")
		if m := checks.Model; m != nil {
			conv := "konvergerade"
			if !m.Converged {
				conv = "konvergerade INTE"
			}
			fmt.Fprintf(&b, "Modellen: %d deltagare, %d till arbete eller studier, devians %.2f, %s efter %d iterationer.\n", m.N, m.Events, m.Deviance, conv, m.Iterations)
		}
	}
	return b.String()
}
