package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/flight/flightsql"
	"github.com/peterh/liner"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/samsyn/samsyn/node/config"
	"github.com/samsyn/samsyn/queries/export"
)

// sqlShell is the analysts' client of their node's Flight SQL service.
type sqlShell struct {
	client *flightsql.Client
	token  string
	format string
	out    io.Writer
	timing bool
}

func (s *sqlShell) ctx(parent context.Context) context.Context {
	return metadata.AppendToOutgoingContext(parent, "authorization", "Bearer "+s.token)
}

// run executes one statement and returns its schema and records.
func (s *sqlShell) run(ctx context.Context, q string) (*arrow.Schema, []arrow.Record, error) {
	ctx = s.ctx(ctx)
	info, err := s.client.Execute(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	return s.fetch(ctx, info)
}

func (s *sqlShell) fetch(ctx context.Context, info *flight.FlightInfo) (*arrow.Schema, []arrow.Record, error) {
	rd, err := s.client.DoGet(ctx, info.Endpoint[0].Ticket)
	if err != nil {
		return nil, nil, err
	}
	defer rd.Release()
	var recs []arrow.Record
	for rd.Next() {
		r := rd.Record()
		r.Retain()
		recs = append(recs, r)
	}
	return rd.Schema(), recs, rd.Err()
}

// write prints a result in the chosen format.
func (s *sqlShell) write(w io.Writer, sc *arrow.Schema, recs []arrow.Record) error {
	switch s.format {
	case "table":
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		for _, f := range sc.Fields() {
			fmt.Fprintf(tw, "%s\t", f.Name)
		}
		fmt.Fprintln(tw)
		n := 0
		for _, rec := range recs {
			for r := 0; r < int(rec.NumRows()); r++ {
				for c := 0; c < int(rec.NumCols()); c++ {
					v := export.Text(rec.Column(c), r)
					if rec.Column(c).IsNull(r) {
						v = "NULL"
					}
					fmt.Fprintf(tw, "%s\t", v)
				}
				fmt.Fprintln(tw)
				n++
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "(%d rows)\n", n)
		return nil
	case "csv":
		return export.CSV(w, sc, recs...)
	case "json":
		return export.JSON(w, sc, recs...)
	case "parquet":
		return export.Parquet(w, sc, recs...)
	case "xlsx":
		return export.XLSX(w, "Resultat", sc, recs...)
	}
	return fmt.Errorf("--format %q: expected table, csv, json, parquet or xlsx", s.format)
}

func (s *sqlShell) statement(ctx context.Context, q, outPath string) error {
	start := time.Now()
	sc, recs, err := s.run(ctx, q)
	if err != nil {
		return err
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	w := s.out
	if outPath != "" {
		f, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if err := s.write(w, sc, recs); err != nil {
		return err
	}
	if s.timing {
		fmt.Fprintf(s.out, "Time: %s\n", time.Since(start).Round(time.Microsecond))
	}
	return nil
}

// describe lists the tables, or one table's columns.
func (s *sqlShell) describe(ctx context.Context, table string) error {
	if table == "" {
		return s.statement(ctx, "SELECT table_name AS name, table_type AS type FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1", "")
	}
	q := "SELECT column_name AS column, data_type AS type, is_nullable AS nullable FROM information_schema.columns WHERE table_name = '" +
		strings.ReplaceAll(table, "'", "''") + "' ORDER BY ordinal_position"
	return s.statement(ctx, q, "")
}

func (s *sqlShell) repl(ctx context.Context) error {
	line := liner.NewLiner()
	defer line.Close()
	line.SetCtrlCAborts(true)
	histPath := ""
	if home, err := os.UserHomeDir(); err == nil {
		histPath = filepath.Join(home, ".samsyn_sql_history")
		if f, err := os.Open(histPath); err == nil {
			line.ReadHistory(f)
			f.Close()
		}
	}
	defer func() {
		if histPath == "" {
			return
		}
		if f, err := os.OpenFile(histPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600); err == nil {
			line.WriteHistory(f)
			f.Close()
		}
	}()
	fmt.Fprintln(s.out, `samsyn sql: your node's own data. End statements with ";". \d lists tables, \d NAME describes one, \timing toggles timing, \q quits.`)
	var buf strings.Builder
	for {
		prompt := "samsyn> "
		if buf.Len() > 0 {
			prompt = "   ...> "
		}
		text, err := line.Prompt(prompt)
		if errors.Is(err, io.EOF) || errors.Is(err, liner.ErrPromptAborted) {
			fmt.Fprintln(s.out)
			return nil
		}
		if err != nil {
			return err
		}
		trimmed := strings.TrimSpace(text)
		if buf.Len() == 0 && strings.HasPrefix(trimmed, `\`) {
			line.AppendHistory(trimmed)
			fields := strings.Fields(trimmed)
			switch fields[0] {
			case `\q`:
				return nil
			case `\timing`:
				s.timing = !s.timing
				fmt.Fprintf(s.out, "timing %v\n", s.timing)
			case `\d`:
				name := ""
				if len(fields) > 1 {
					name = fields[1]
				}
				if err := s.describe(ctx, name); err != nil {
					fmt.Fprintln(s.out, "error:", err)
				}
			default:
				fmt.Fprintf(s.out, "unknown command %s: \\d, \\d NAME, \\timing, \\q\n", fields[0])
			}
			continue
		}
		buf.WriteString(text)
		buf.WriteString("\n")
		if !strings.HasSuffix(trimmed, ";") {
			continue
		}
		q := strings.TrimSpace(buf.String())
		buf.Reset()
		line.AppendHistory(strings.ReplaceAll(q, "\n", " "))
		if err := s.statement(ctx, strings.TrimSuffix(q, ";"), ""); err != nil {
			fmt.Fprintln(s.out, "error:", err)
		}
	}
}

func newSQLCmd(g *globals) *cobra.Command {
	var cfgPath, node, token, command, format, outPath string
	cmd := &cobra.Command{
		Use:   "sql --config node.yaml [-c SQL] [--format table|csv|json|parquet|xlsx] [--out FILE]",
		Short: "Query your own node's data with SQL (an interactive shell, or -c for scripts)",
		Long: `Connect to your node's local Flight SQL service (address and token from node.yaml; --node
and --token override) and run read-only SQL on your association's own data. Without -c it
opens an interactive shell: multi-line statements ending with ";", history, \d to list
tables and \d NAME to describe one, \timing. Nothing here reaches the coordinator.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath != "" {
				cfg, err := config.Load(cfgPath)
				if err != nil {
					return err
				}
				if node == "" {
					node = cfg.SQL.Listen
				}
				if token == "" && cfg.SQL.TokenFile != "" {
					if token, err = cfg.ReadSQLToken(); err != nil {
						return err
					}
				}
			}
			if node == "" || token == "" {
				return errors.New("no SQL service: give --config node.yaml (with sql.listen and sql.token_file), or --node and --token")
			}
			target := node
			if p, ok := strings.CutPrefix(node, "unix:"); ok {
				target = "unix://" + p
			}
			client, err := flightsql.NewClient(target, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer client.Close()
			sh := &sqlShell{client: client, token: token, format: format, out: cmd.OutOrStdout()}
			if command != "" {
				return sh.statement(cmd.Context(), command, outPath)
			}
			if outPath != "" {
				return errors.New("--out needs -c")
			}
			return sh.repl(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "the node's node.yaml")
	cmd.Flags().StringVar(&node, "node", "", "the SQL service address (127.0.0.1:PORT or unix:/path)")
	cmd.Flags().StringVar(&token, "token", "", "the analysts' token (default: sql.token_file)")
	cmd.Flags().StringVarP(&command, "command", "c", "", "run one statement and exit")
	cmd.Flags().StringVar(&format, "format", "table", "table, csv, json, parquet or xlsx")
	cmd.Flags().StringVar(&outPath, "out", "", "write the result to FILE (mode 0600)")
	return cmd
}
