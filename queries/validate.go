package queries

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/marcboeker/go-duckdb"

	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/schemas"
)

var (
	idPattern    = regexp.MustCompile(`^[a-z][a-z0-9_]{2,63}$`)
	paramPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
	paramRef     = regexp.MustCompile(`\$([A-Za-z_][A-Za-z0-9_]*)`)
	lineComment  = regexp.MustCompile(`--[^\n]*`)
	blockComment = regexp.MustCompile(`(?s)/\*.*?\*/`)
	word         = regexp.MustCompile(`[a-z_][a-z0-9_]*`)
)

// forbidden are words a view may not contain: statements other than a query, and the table
// functions and catalogs through which a view could read something other than the schema.
var forbidden = map[string]bool{
	"attach": true, "detach": true, "copy": true, "pragma": true, "set": true, "reset": true,
	"install": true, "load": true, "call": true, "export": true, "import": true, "create": true,
	"insert": true, "update": true, "delete": true, "drop": true, "alter": true, "truncate": true,
	"checkpoint": true, "vacuum": true, "use": true, "prepare": true, "execute": true, "begin": true,
	"commit": true, "rollback": true, "describe": true, "summarize": true, "show": true,
	"read_csv": true, "read_csv_auto": true, "read_parquet": true, "parquet_scan": true,
	"read_json": true, "read_json_auto": true, "read_text": true, "read_blob": true, "glob": true,
	"sniff_csv": true, "parquet_metadata": true, "parquet_schema": true, "getenv": true,
	"current_setting": true, "information_schema": true, "pg_catalog": true, "sqlite_master": true,
	"query": true, "query_table": true, "samsyn_schema": true, "samsyn_import": true,
}

// identifierColumns may never be a dimension or a measure.
var identifierColumns = map[string]bool{schemas.KeyColumn: true, "personnummer": true, "anonymous_id": true}

// Validate checks the entry statically and then by running its view and the aggregate the
// node would wrap around it against an empty database built from the schema.
func (e *Entry) Validate() error {
	s := schemas.V1()
	if !idPattern.MatchString(e.ID) {
		return e.fail("id", "%q: expected lowercase letters, digits and _ (3–64 characters)", e.ID)
	}
	if base := strings.TrimSuffix(filepath.Base(e.file), ".yaml"); e.file != "" && base != e.ID {
		return e.fail("id", "%q differs from the file name %s.yaml", e.ID, base)
	}
	if e.Version < 1 {
		return e.fail("version", "%d: expected 1 or more", e.Version)
	}
	for field, t := range map[string]schemas.Text{"title": e.Title, "description": e.Description} {
		if strings.TrimSpace(t.SV) == "" || strings.TrimSpace(t.EN) == "" {
			return e.fail(field, "expected both sv and en")
		}
	}
	if err := e.checkViewText(); err != nil {
		return err
	}
	for name, p := range e.Params {
		if !paramPattern.MatchString(name) {
			return e.fail("params."+name, "expected a lowercase name")
		}
		if err := p.check(s); err != nil {
			return e.fail("params."+name, "%v", err)
		}
	}
	used := map[string]bool{}
	for _, m := range paramRef.FindAllStringSubmatch(e.View, -1) {
		used[m[1]] = true
		if _, ok := e.Params[m[1]]; !ok {
			return e.fail("view", "uses $%s, which is not declared in params", m[1])
		}
	}
	for name := range e.Params {
		if !used[name] {
			return e.fail("params."+name, "declared but not used in the view")
		}
	}
	seen := map[string]bool{}
	for i := range e.Dimensions {
		d := &e.Dimensions[i]
		field := fmt.Sprintf("dimensions[%d]", i)
		if err := bindDimension(s, d); err != nil {
			return e.fail(field, "%s: %v", d.Name, err)
		}
		if seen[d.Name] {
			return e.fail(field, "%s appears twice", d.Name)
		}
		seen[d.Name] = true
	}
	for i, m := range e.Measures {
		field := fmt.Sprintf("measures[%d]", i)
		switch {
		case m.Agg != "mean" && m.Agg != "sum":
			return e.fail(field, "%s: agg %q: expected mean or sum", m.Name, m.Agg)
		case identifierColumns[m.Name] || !paramPattern.MatchString(m.Name):
			return e.fail(field, "%q cannot be a measure", m.Name)
		case seen[m.Name]:
			return e.fail(field, "%s is already a dimension or measure", m.Name)
		}
		seen[m.Name] = true
	}
	if len(e.Dimensions) > 4 {
		return e.fail("dimensions", "%d dimensions: expected at most 4", len(e.Dimensions))
	}
	if e.Analysis != nil {
		if err := e.validateAnalysis(s); err != nil {
			return err
		}
	}
	return e.checkAgainstSchema()
}

func (e *Entry) checkViewText() error {
	v := strings.ToLower(blockComment.ReplaceAllString(lineComment.ReplaceAllString(e.View, " "), " "))
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "select") && !strings.HasPrefix(v, "with") {
		return e.fail("view", "expected a single SELECT (or WITH … SELECT) query")
	}
	if strings.Contains(v, ";") {
		return e.fail("view", "contains ';': expected a single query")
	}
	for _, w := range word.FindAllString(v, -1) {
		if forbidden[w] || strings.HasPrefix(w, "duckdb_") || strings.HasPrefix(w, "pragma_") {
			return e.fail("view", "uses %q: a view may only read the schema's tables", w)
		}
		// The node's own objects (the record-key macro on its connections, the import log, the
		// hand-over view) are out of a view's reach whatever they are called later.
		if strings.HasPrefix(w, "samsyn_") {
			return e.fail("view", "uses %q: names beginning samsyn_ are the node's own", w)
		}
	}
	return nil
}

// bindDimension resolves the dimension's code list.
func bindDimension(s *schemas.Schema, d *Dimension) error {
	if identifierColumns[d.Name] || d.Name == "" {
		return errors.New("identifiers cannot be dimensions")
	}
	if d.From != "" {
		cl, ok := s.CodeList(d.Name)
		if !ok || cl.Banding == "" {
			return fmt.Errorf("from %s needs %s to be a banding in schemas (e.g. age_band, months_in_project_band)", d.From, d.Name)
		}
		if identifierColumns[d.From] {
			return errors.New("identifiers cannot be banded")
		}
		d.CodeList = d.Name
		return nil
	}
	if d.CodeList == "" {
		if _, ok := s.CodeList(d.Name); ok {
			d.CodeList = d.Name
		}
		for _, t := range s.Tables {
			if c, ok := t.Column(d.Name); ok && c.Type == schemas.TypeCode {
				d.CodeList = c.CodeList
			}
		}
	}
	cl, ok := s.CodeList(d.CodeList)
	if !ok {
		return errors.New("not bound to a code list: name a schema code column or code list, or set codelist")
	}
	if cl.Banding != "" {
		return fmt.Errorf("%s is a banding: give from: with the numeric column it bands", cl.Name)
	}
	return nil
}

// Domain is the dimension's code list values in order.
func (d Dimension) Domain() []string {
	cl, ok := schemas.V1().CodeList(d.CodeList)
	if !ok {
		return nil
	}
	return cl.Values()
}

var numericTypes = regexp.MustCompile(`^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|DOUBLE|DECIMAL.*)$`)

// checkAgainstSchema runs the view and the generated aggregate on an empty schema database.
func (e *Entry) checkAgainstSchema() error {
	db, err := emptySchemaDB()
	if err != nil {
		return fmt.Errorf("prepare validation database: %w", err)
	}
	args := make(map[string]string, len(e.Params))
	for name, p := range e.Params {
		args[name] = p.sample()
	}
	bound, err := e.Bind(args)
	if err != nil {
		return e.fail("params", "%v", err)
	}
	ctx := context.Background()
	rows, err := db.QueryContext(ctx, "SELECT * FROM ("+NormalizeView(e.View)+"\n) LIMIT 0", bound.Args()...)
	if err != nil {
		return e.fail("view", "does not run against the schema: %s", firstLine(err))
	}
	types, err := rows.ColumnTypes()
	rows.Close()
	if err != nil {
		return e.fail("view", "%v", err)
	}
	cols := map[string]string{}
	for _, t := range types {
		if _, dup := cols[t.Name()]; dup {
			return e.fail("view", "yields the column %s twice", t.Name())
		}
		cols[t.Name()] = t.DatabaseTypeName()
	}
	if cols[schemas.KeyColumn] != "VARCHAR" {
		return e.fail("view", "must yield participant_key (one row per participant and fact)")
	}
	if e.Analysis != nil {
		if err := e.checkAnalysisColumns(cols); err != nil {
			return err
		}
		q, err := e.AnalysisSQL()
		if err != nil {
			return e.fail("view", "%v", err)
		}
		if _, err := db.ExecContext(ctx, q, bound.Args()...); err != nil {
			return e.fail("view", "the node's analysis statement does not run: %s", firstLine(err))
		}
		return nil
	}
	for i, d := range e.Dimensions {
		field := fmt.Sprintf("dimensions[%d]", i)
		src := d.Name
		if d.From != "" {
			src = d.From
		}
		typ, ok := cols[src]
		switch {
		case !ok:
			return e.fail(field, "the view has no column %s", src)
		case d.From != "" && !numericTypes.MatchString(typ):
			return e.fail(field, "%s is %s: a banded column must be numeric", src, typ)
		case d.From == "" && typ != "VARCHAR":
			return e.fail(field, "%s is %s: a dimension must be a code (VARCHAR) bound to a code list; dates and numbers go through a banding", src, typ)
		}
	}
	for i, m := range e.Measures {
		typ, ok := cols[m.Name]
		if !ok || !numericTypes.MatchString(typ) {
			return e.fail(fmt.Sprintf("measures[%d]", i), "the view has no numeric column %s", m.Name)
		}
	}
	agg, err := e.AggregateSQL()
	if err != nil {
		return e.fail("view", "%v", err)
	}
	// As the node runs it: with the parameters' values written in (Bound.Inline).
	if agg, err = bound.Inline(agg); err != nil {
		return e.fail("view", "%v", err)
	}
	if _, err := db.ExecContext(ctx, agg); err != nil {
		return e.fail("view", "the node's aggregate does not run: %s", firstLine(err))
	}
	return nil
}

func firstLine(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return msg
}

var (
	validationDB     *sql.DB
	validationDBErr  error
	validationDBOnce sync.Once
)

// emptySchemaDB is an in-memory database with the schema's tables, no rows, no access to
// files, and a stand-in record-key key (RecordKeyMacro).
func emptySchemaDB() (*sql.DB, error) {
	validationDBOnce.Do(func() {
		connector, err := duckdb.NewConnector("", func(ex driver.ExecerContext) error {
			for _, stmt := range []string{"SET autoinstall_known_extensions = false", "SET autoload_known_extensions = false"} {
				if _, err := ex.ExecContext(context.Background(), stmt, nil); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			validationDBErr = err
			return
		}
		db := sql.OpenDB(connector)
		db.SetMaxOpenConns(1)
		conn, err := db.Conn(context.Background())
		if err != nil {
			validationDBErr = err
			return
		}
		defer conn.Close()
		macro, err := RecordKeyMacroSQL(disclosure.RecordKeySQLKey(make([]byte, 32)), true)
		if err != nil {
			validationDBErr = err
			return
		}
		if _, err := conn.ExecContext(context.Background(), macro); err != nil {
			validationDBErr = err
			return
		}
		for _, t := range schemas.V1().Tables {
			if _, err := conn.ExecContext(context.Background(), t.DDL()); err != nil {
				validationDBErr = err
				return
			}
		}
		if _, err := conn.ExecContext(context.Background(), "SET enable_external_access = false"); err != nil {
			validationDBErr = err
			return
		}
		validationDB = db
	})
	return validationDB, validationDBErr
}
