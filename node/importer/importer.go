package importer

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/marcboeker/go-duckdb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/samsyn/samsyn/node/store"
	"github.com/samsyn/samsyn/schemas"
)

// Options describe one import: one table, one or more files, all-or-nothing.
type Options struct {
	Table       string
	Files       []string
	Association string // the node's association; rows must belong to it
	Secret      []byte // the node secret that keys participant keys
	// Progress, if set, is told how far each phase has come (total < 0 when unknown).
	Progress func(phase string, done, total int64)
	// Now stamps the import record; time.Now when nil.
	Now func() time.Time
}

// Result describes a finished import.
type Result struct {
	Table     string
	Files     []string
	Rows      int64  // rows read from the files
	Changed   int64  // rows inserted or replaced in the store
	Snapshot  string // the store's data snapshot id after the import
	Unchanged bool   // every row was already in the store as it is: nothing was written
}

// Importer imports exports into one node store.
type Importer struct {
	store  *store.Store
	schema *schemas.Schema
	logger *slog.Logger
	rows   *prometheus.CounterVec
	runs   *prometheus.CounterVec
}

// New returns an Importer writing to st.
func New(st *store.Store, logger *slog.Logger, reg prometheus.Registerer) *Importer {
	f := promauto.With(reg)
	return &Importer{
		store:  st,
		schema: schemas.V1(),
		logger: logger.With("component", "importer"),
		rows: f.NewCounterVec(prometheus.CounterOpts{Name: "samsyn_node_import_rows_total",
			Help: "Rows written to the store by imports, by table."}, []string{"table"}),
		runs: f.NewCounterVec(prometheus.CounterOpts{Name: "samsyn_node_imports_total",
			Help: "Import runs by table and result (written, unchanged, refused, error)."}, []string{"table", "result"}),
	}
}

// source is one staged input file.
type source struct {
	path    string
	format  format
	sha256  string
	rows    int64
	columns map[string]string // canonical column or identity column -> header as written
}

// place says where the row (0-based, in the file's order) is, for a problem: a line of a CSV
// file, or a row number where a format has no lines.
func (s *source) place(row int64) (line int, isRow bool) { return s.format.place(row) }

// format is how one kind of export file is read: opened (open), staged as raw text (stage)
// and pointed into (place) through this, so neither branches on the kind.
type format interface {
	name() string // for messages: "CSV", "Parquet"
	// headerLine is the line a problem with the header names (0: the format has no lines).
	headerLine() int
	// from is the DuckDB table function that reads the file's rows in order.
	from(path string) string
	// raw is the SQL expression of a column's value as text, NULL when empty, by the header
	// as written.
	raw(header string) string
	place(row int64) (line int, isRow bool)
}

// csvFormat reads a CSV file whose structure scanCSV has checked: every column as text.
type csvFormat struct{ f *csvFile }

func (c csvFormat) name() string    { return "CSV" }
func (c csvFormat) headerLine() int { return 1 }
func (c csvFormat) from(path string) string {
	cols := make([]string, len(c.f.header))
	for j := range cols {
		cols[j] = fmt.Sprintf("'c%d': 'VARCHAR'", j)
	}
	return fmt.Sprintf("read_csv(%s, header = true, delim = %s, quote = '\"', escape = '\"', auto_detect = false, columns = {%s})",
		lit(path), lit(string(c.f.delim)), strings.Join(cols, ", "))
}
func (c csvFormat) raw(header string) string {
	return ident(fmt.Sprintf("c%d", indexOf(c.f.header, header)))
}
func (c csvFormat) place(row int64) (int, bool) { return c.f.line(row), false }

// parquetFormat reads a Parquet file: typed columns, cast to text to be checked like CSV's.
type parquetFormat struct{}

func (parquetFormat) name() string            { return "Parquet" }
func (parquetFormat) headerLine() int         { return 0 }
func (parquetFormat) from(path string) string { return "read_parquet(" + lit(path) + ")" }
func (parquetFormat) raw(header string) string {
	return "NULLIF(CAST(" + ident(header) + " AS VARCHAR), '')"
}
func (parquetFormat) place(row int64) (int, bool) { return int(row) + 1, true }

// Import validates every file in full and, only if all are valid, upserts their rows in one
// transaction. A *ValidationError lists the problems; the store is then untouched.
func (im *Importer) Import(ctx context.Context, opts Options) (res *Result, err error) {
	t, ok := im.schema.Table(opts.Table)
	if !ok {
		return nil, fmt.Errorf("unknown table %q: expected one of %s", opts.Table, strings.Join(im.schema.TableNames(), ", "))
	}
	if len(opts.Files) == 0 {
		return nil, errors.New("no files to import")
	}
	if len(opts.Secret) == 0 {
		return nil, errors.New("no node secret")
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	phaseStart, phase := time.Now(), "open"
	report := progress
	progress = func(p string, done, total int64) {
		if p != phase {
			im.logger.Debug("import phase done", "phase", phase, "elapsed", time.Since(phaseStart))
			phase, phaseStart = p, time.Now()
		}
		report(p, done, total)
	}
	defer func() {
		result := "written"
		var ve *ValidationError
		switch {
		case errors.As(err, &ve):
			result = "refused"
		case err != nil:
			result = "error"
		case res.Unchanged:
			result = "unchanged"
		}
		im.runs.WithLabelValues(t.Name, result).Inc()
	}()

	// Staging lives in a private in-memory DuckDB that may not spill to disk: identity
	// numbers pass through it only as input to the keyed hash.
	staging, err := store.OpenDB("", "SET temp_directory = ''", "SET preserve_insertion_order = true")
	if err != nil {
		return nil, fmt.Errorf("open staging: %w", err)
	}
	defer staging.Close()
	conn, err := staging.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("open staging: %w", err)
	}
	defer conn.Close()
	if err := duckdb.RegisterScalarUDF(conn, "samsyn_identity", udf{k: NewKeyer(opts.Secret)}); err != nil {
		return nil, fmt.Errorf("register identity function: %w", err)
	}

	ps := &problems{}
	sources := make([]*source, 0, len(opts.Files))
	for _, path := range opts.Files {
		src, err := im.open(ctx, conn, path, t, ps, progress)
		if err != nil {
			return nil, err
		}
		sources = append(sources, src)
	}
	if err := ps.err(); err != nil {
		return nil, err
	}

	var total int64
	for i, src := range sources {
		progress("stage "+filepath.Base(src.path), int64(i), int64(len(sources)))
		if err := im.stage(ctx, conn, i, src, t, opts.Association); err != nil {
			return nil, err
		}
		total += src.rows
	}
	views := make([]string, len(sources))
	for i := range sources {
		views[i] = fmt.Sprintf("SELECT %d AS file, rowid AS row, * FROM f%d", i, i)
	}
	if _, err := conn.ExecContext(ctx, "CREATE VIEW staged AS "+strings.Join(views, " UNION ALL ")); err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}

	progress("check", 0, total)
	if err := im.check(ctx, conn, sources, t, opts.Association, ps); err != nil {
		return nil, err
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	progress("check", total, total)

	rec := store.ImportRecord{Table: t.Name, RowsRead: total, SchemaVersion: schemas.Version}
	for _, src := range sources {
		rec.Files = append(rec.Files, filepath.Base(src.path))
		rec.FileSHA256 = append(rec.FileSHA256, src.sha256)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	rec.ImportedAt = now()
	progress("write", 0, total)
	changed, err := im.write(ctx, conn, sources, t, &rec, ps)
	if err != nil {
		return nil, err
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	progress("write", total, total)
	snap, err := im.store.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	im.rows.WithLabelValues(t.Name).Add(float64(changed))
	im.logger.Info("import done", "table", t.Name, "files", len(sources), "rows", total, "changed", changed, "snapshot", snap)
	return &Result{Table: t.Name, Files: rec.Files, Rows: total, Changed: changed, Snapshot: snap, Unchanged: changed == 0}, nil
}

// open reads a file's header (and, for CSV, checks its structure) and maps its columns.
func (im *Importer) open(ctx context.Context, conn *sql.Conn, path string, t *schemas.Table, ps *problems, progress func(string, int64, int64)) (*source, error) {
	src := &source{path: path, columns: map[string]string{}}
	var header []string
	var err error
	before := ps.total
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".csv", ".txt":
		src.format, header, err = openCSV(path, src, ps, func(rows int64) { progress("read "+filepath.Base(path), rows, -1) })
	case ".parquet", ".pq":
		src.format, header, err = openParquet(ctx, conn, path, src, ps)
	default:
		return nil, fmt.Errorf("%s: unknown file type %q: expected .csv or .parquet", path, ext)
	}
	if err != nil {
		return nil, err
	}
	if ps.total > before && header == nil {
		return src, nil // the file as a whole is unreadable: its problems are listed
	}
	headerLine := src.format.headerLine()
	for _, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		canon := identityAliases[name]
		if canon == "" {
			if col, ok := t.Resolve(h); ok && col.Type != schemas.TypeKey {
				canon = col.Name
			}
		}
		switch {
		case canon == "":
			ps.add(Problem{File: path, Line: headerLine, Column: h, Found: "an unknown column",
				Expected: "one of personnummer, anonymous_id, " + strings.Join(t.ColumnNames()[1:], ", ")})
		case src.columns[canon] != "":
			ps.add(Problem{File: path, Line: headerLine, Column: h, Found: "a second column for " + canon, Expected: "each column once"})
		default:
			src.columns[canon] = h
		}
	}
	if header != nil && src.columns[colPersonnummer] == "" && src.columns[colAnonymousID] == "" {
		ps.add(Problem{File: path, Line: headerLine, Column: colPersonnummer, Found: "no identity column", Expected: "a personnummer or an anonymous_id column (or both)"})
	}
	for _, col := range t.Columns[1:] {
		if !col.Nullable && src.columns[col.Name] == "" && header != nil && col.Name != "association" {
			ps.add(Problem{File: path, Line: headerLine, Column: col.Name, Found: "a missing column", Expected: fmt.Sprintf("a column %s (%s)", col.Name, col.Title.SV)})
		}
	}
	return src, nil
}

// openCSV checks a CSV file's structure in full (scanCSV) and returns its format and header;
// a nil header when it has problems.
func openCSV(path string, src *source, ps *problems, progress func(int64)) (format, []string, error) {
	before := ps.total
	f, err := scanCSV(path, ps, progress)
	if err != nil || ps.total > before {
		return nil, nil, err
	}
	src.sha256, src.rows = f.sha256, f.rows
	return csvFormat{f}, f.header, nil
}

// openParquet reads a Parquet file's column names and row count; a nil header when DuckDB
// cannot read it.
func openParquet(ctx context.Context, conn *sql.Conn, path string, src *source, ps *problems) (format, []string, error) {
	digest, err := fileSHA256(path)
	if err != nil {
		return nil, nil, err
	}
	src.sha256 = digest
	rows, err := conn.QueryContext(ctx, "SELECT column_name FROM (DESCRIBE SELECT * FROM read_parquet("+lit(path)+"))")
	if err != nil {
		ps.add(Problem{File: path, Found: "not a readable Parquet file (" + duckdbReason(err) + ")", Expected: "a Parquet file"})
		return nil, nil, nil
	}
	var header []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return nil, nil, err
		}
		header = append(header, name)
	}
	rows.Close()
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM read_parquet("+lit(path)+")").Scan(&src.rows); err != nil {
		ps.add(Problem{File: path, Found: "an unreadable Parquet file (" + duckdbReason(err) + ")", Expected: "a Parquet file"})
		return nil, nil, nil
	}
	if src.rows == 0 {
		ps.add(Problem{File: path, Found: "a file with no rows", Expected: "at least one row"})
	}
	return parquetFormat{}, header, nil
}

// stage loads file i into staging table f<i>: the identity columns become ident, every
// other column is raw text under its canonical name.
func (im *Importer) stage(ctx context.Context, conn *sql.Conn, i int, src *source, t *schemas.Table, association string) error {
	raw := func(canon string) string {
		h, ok := src.columns[canon]
		switch {
		case !ok && canon == "association":
			return lit(association) // an export need not repeat its own association
		case !ok:
			return "NULL::VARCHAR"
		}
		return src.format.raw(h)
	}
	sel := []string{"samsyn_identity(" + raw(colPersonnummer) + ", " + raw(colAnonymousID) + ") AS ident"}
	for _, col := range t.Columns[1:] {
		sel = append(sel, raw(col.Name)+" AS "+ident(col.Name))
	}
	q := fmt.Sprintf("CREATE TABLE f%d AS SELECT %s FROM %s", i, strings.Join(sel, ", "), src.format.from(src.path))
	if _, err := conn.ExecContext(ctx, q); err != nil {
		// DuckDB's parse errors quote the offending line, which may hold a personnummer:
		// say where to look, never what DuckDB saw.
		return fmt.Errorf("%s: could not be read as %s after the first checks passed (DuckDB's message is withheld because it may quote personal data); check quoting, line breaks and column types", src.path, src.format.name())
	}
	return nil
}

func indexOf(list []string, v string) int {
	for i, s := range list {
		if s == v {
			return i
		}
	}
	return -1
}

// check runs every rule and the duplicate-key check over the staged rows in one pass that
// only counts: rows with a problem, and rows whose key an earlier row had. The queries that
// list problems with their lines run only if there are any.
func (im *Importer) check(ctx context.Context, conn *sql.Conn, sources []*source, t *schemas.Table, association string, ps *problems) error {
	cs := checks(im.schema, t, association)
	var bad, dups int64
	if err := conn.QueryRowContext(ctx, countProblemsQuery(cs, t)).Scan(&bad, &dups); err != nil {
		return fmt.Errorf("check rows: %w", err)
	}
	if bad > 0 {
		// The duplicate count is exact only over valid rows: list the problems first.
		if err := im.listProblems(ctx, conn, sources, cs, ps); err != nil || ps.total > 0 {
			return err
		}
	}
	if dups == 0 && bad == 0 {
		return nil
	}
	return im.checkDuplicates(ctx, conn, sources, t, ps)
}

func (im *Importer) listProblems(ctx context.Context, conn *sql.Conn, sources []*source, cs []check, ps *problems) error {
	rows, err := conn.QueryContext(ctx, problemQuery(cs))
	if err != nil {
		return fmt.Errorf("check rows: %w", err)
	}
	defer rows.Close()
	total := 0
	for rows.Next() {
		var file int
		var row int64
		var problem string
		if err := rows.Scan(&file, &row, &problem, &total); err != nil {
			return fmt.Errorf("check rows: %w", err)
		}
		parts := strings.SplitN(problem, "\x1f", 4)
		line, isRow := sources[file].place(row)
		ps.add(Problem{File: sources[file].path, Line: line, Row: isRow, Found: parts[1], Column: parts[2], Expected: parts[3]})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check rows: %w", err)
	}
	ps.total += total - len(ps.list)
	return nil
}

// checkDuplicates reports every row whose key an earlier row of the import already had; check
// calls it when countProblemsQuery counted some (or could not count them exactly).
func (im *Importer) checkDuplicates(ctx context.Context, conn *sql.Conn, sources []*source, t *schemas.Table, ps *problems) error {
	keys := strings.Join(quoteAll(t.Key), ", ")
	keyExprs := make([]string, len(t.Key))
	for i, k := range t.Key {
		col, _ := t.Column(k)
		keyExprs[i] = typedExpr(col) + " AS " + ident(k)
	}
	total := 0
	q := fmt.Sprintf(`WITH k AS (SELECT file, row, %s FROM staged),
d AS (SELECT file, row, first_value(file) OVER w AS ffile, first_value(row) OVER w AS frow, row_number() OVER w AS n FROM k
      WINDOW w AS (PARTITION BY %s ORDER BY file, row))
SELECT file, row, ffile, frow, count(*) OVER () FROM d WHERE n > 1 ORDER BY file, row LIMIT %d`, strings.Join(keyExprs, ", "), keys, MaxProblems)
	drows, err := conn.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("check duplicates: %w", err)
	}
	defer drows.Close()
	listed := len(ps.list)
	for drows.Next() {
		var file, ffile int
		var row, frow int64
		if err := drows.Scan(&file, &row, &ffile, &frow, &total); err != nil {
			return fmt.Errorf("check duplicates: %w", err)
		}
		line, isRow := sources[file].place(row)
		fline, _ := sources[ffile].place(frow)
		first := fmt.Sprintf("%s:%d", sources[ffile].path, fline)
		ps.add(Problem{File: sources[file].path, Line: line, Row: isRow, Column: strings.Join(t.Key, "+"),
			Found: "the same key as " + first, Expected: "one row per " + strings.Join(t.Key, ", ")})
	}
	if err := drows.Err(); err != nil {
		return fmt.Errorf("check duplicates: %w", err)
	}
	ps.total += total - (len(ps.list) - listed)
	return nil
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = ident(n)
	}
	return out
}

// write moves the typed rows into the store: rows identical to stored ones are skipped,
// others replace their key's row, all in one transaction with the import record.
func (im *Importer) write(ctx context.Context, staging *sql.Conn, sources []*source, t *schemas.Table, rec *store.ImportRecord, ps *problems) (int64, error) {
	sel := []string{"file", "row"}
	for _, col := range t.Columns {
		sel = append(sel, typedExpr(col)+" AS "+ident(col.Name))
	}
	var reader array.RecordReader
	err := staging.Raw(func(dc any) error {
		ar, err := duckdb.NewArrowFromConn(dc.(driver.Conn))
		if err != nil {
			return err
		}
		reader, err = ar.QueryContext(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM staged")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("read staged rows: %w", err)
	}
	defer reader.Release()

	conn, err := im.store.DB().Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("open store connection: %w", err)
	}
	defer conn.Close()
	var release func()
	err = conn.Raw(func(dc any) error {
		ar, err := duckdb.NewArrowFromConn(dc.(driver.Conn))
		if err != nil {
			return err
		}
		release, err = ar.RegisterView(reader, handOverView)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("hand rows to the store: %w", err)
	}
	defer release()
	// duckdb_arrow_scan leaves a view in the catalog that points at the hand-over stream: it
	// must be gone before the stream is released (deferred calls run last-in, first-out).
	defer conn.ExecContext(context.WithoutCancel(ctx), "DROP VIEW IF EXISTS "+handOverView+"; DROP TABLE IF EXISTS temp.samsyn_incoming; DROP TABLE IF EXISTS temp.samsyn_changed")
	cols := strings.Join(quoteAll(t.ColumnNames()), ", ")
	var existing int64
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM (SELECT 1 FROM "+t.Name+" LIMIT 1)").Scan(&existing); err != nil {
		return 0, fmt.Errorf("compare with the store: %w", err)
	}
	// The Arrow hand-over is read once, outside the transaction (DuckDB 1.1 crashes when an
	// Arrow scan feeds an INSERT inside an explicit transaction).
	if _, err := conn.ExecContext(ctx, "CREATE TEMP TABLE samsyn_incoming AS SELECT * FROM "+handOverView+""); err != nil {
		return 0, fmt.Errorf("hand rows to the store: %w", err)
	}
	if t.Name != "participant" {
		if err := referenceCheck(ctx, conn, sources, ps); err != nil || ps.total > 0 {
			return 0, err
		}
	}
	from := "samsyn_incoming"
	if existing > 0 {
		// Only rows that differ from the stored ones are written.
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("CREATE TEMP TABLE samsyn_changed AS SELECT %s FROM samsyn_incoming EXCEPT SELECT %s FROM %s", cols, cols, t.Name)); err != nil {
			return 0, fmt.Errorf("compare with the store: %w", err)
		}
		from = "samsyn_changed"
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin import: %w", err)
	}
	defer tx.Rollback()
	if existing > 0 {
		match := make([]string, len(t.Key))
		for i, k := range t.Key {
			match[i] = fmt.Sprintf("%s.%s = c.%s", t.Name, ident(k), ident(k))
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s USING samsyn_changed c WHERE %s", t.Name, strings.Join(match, " AND "))); err != nil {
			return 0, fmt.Errorf("replace changed rows: %w", err)
		}
	}
	res, err := tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s SELECT %s FROM %s", t.Name, cols, from))
	if err != nil {
		return 0, fmt.Errorf("insert rows: %w", err)
	}
	changed, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if changed == 0 {
		return 0, nil // the deferred rollback leaves the store as it was
	}
	rec.RowsChanged = changed
	if err := store.AppendImport(ctx, tx, rec); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit import: %w", err)
	}
	im.store.Committed(*rec)
	return changed, nil
}

// handOverView is the name under which staged rows reach the store.
const handOverView = store.HandOverView

// referenceCheck refuses rows whose participant is not in the store.
func referenceCheck(ctx context.Context, conn *sql.Conn, sources []*source, ps *problems) error {
	rows, err := conn.QueryContext(ctx, fmt.Sprintf(`SELECT file, row, count(*) OVER () FROM samsyn_incoming i
WHERE NOT EXISTS (SELECT 1 FROM participant p WHERE p.participant_key = i.participant_key) ORDER BY file, row LIMIT %d`, MaxProblems))
	if err != nil {
		return fmt.Errorf("check participants: %w", err)
	}
	defer rows.Close()
	total := 0
	for rows.Next() {
		var file int
		var row int64
		if err := rows.Scan(&file, &row, &total); err != nil {
			return err
		}
		line, isRow := sources[file].place(row)
		ps.add(Problem{File: sources[file].path, Line: line, Row: isRow, Column: colPersonnummer,
			Found: "a participant who is not in the store (value not shown)", Expected: "a participant imported first with --table participant"})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	ps.total += total - len(ps.list)
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// duckdbReason shortens a DuckDB error to its first line without the error class. Use it
// only for errors about a file as a whole (its format), never for row content.
func duckdbReason(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if i := strings.Index(msg, " Error: "); i >= 0 && i < 30 {
		msg = msg[i+len(" Error: "):]
	}
	return msg
}
