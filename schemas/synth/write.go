package synth

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"

	"github.com/samsyn/samsyn/schemas"
)

// ErrOutputExists is returned by Write when the output directory already holds association
// folders and Options.Overwrite is not set.
var ErrOutputExists = errors.New("the output directory already holds association folders")

// Summary says what Write wrote.
type Summary struct {
	Dir    string
	Format string
	Seed   uint64
	Files  []File // by association (code list order), then table (schema order)
}

// File is one written file.
type File struct {
	Association string
	Table       string
	Path        string
	Rows        int64
}

// Rows is the number of rows written to table over every association.
func (s Summary) Rows(table string) int64 {
	var n int64
	for _, f := range s.Files {
		if f.Table == table {
			n += f.Rows
		}
	}
	return n
}

// Print writes the summary as a table: one line per file and a total per table.
func (s Summary) Print(w io.Writer) error {
	width := len("file")
	for _, f := range s.Files {
		width = max(width, len(f.Path))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-*s  %10s\n", width, "file", "rows")
	for _, f := range s.Files {
		fmt.Fprintf(&b, "%-*s  %10d\n", width, f.Path, f.Rows)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	var totals []string
	for _, t := range Tables() {
		totals = append(totals, fmt.Sprintf("%d %s", s.Rows(t), t))
	}
	_, err := fmt.Fprintf(w, "SYNTHETIC data (seed %d, %s) in %s: %d files; %s rows\n",
		s.Seed, s.Format, s.Dir, len(s.Files), strings.Join(totals, ", "))
	return err
}

// Write generates the selected associations into dir: one folder per association, one file
// per table (dir/<association>/<table>.csv or .parquet). Associations are written
// concurrently, at most GOMAXPROCS at a time; memory stays bounded whatever the number of
// participants. Each file is written under a temporary name and renamed when complete.
func Write(ctx context.Context, dir string, opts Options) (Summary, error) {
	m, err := loadModel()
	if err != nil {
		return Summary{}, err
	}
	if err := opts.check(m); err != nil {
		return Summary{}, err
	}
	tables, err := loadTables()
	if err != nil {
		return Summary{}, err
	}
	if opts.Format == "" {
		opts.Format = "csv"
	}
	sum := Summary{Dir: dir, Format: opts.Format, Seed: opts.Seed}
	if !opts.Overwrite {
		var found []string
		for _, a := range m.associations {
			if _, err := os.Stat(filepath.Join(dir, a)); err == nil {
				found = append(found, a)
			}
		}
		if len(found) > 0 {
			return sum, fmt.Errorf("write synthetic data to %s: %w (%s)", dir, ErrOutputExists, strings.Join(found, ", "))
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return sum, fmt.Errorf("create output directory: %w", err)
	}

	counts := opts.counts(m)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	files := make([][]File, len(counts))
	errs := make([]error, len(counts))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for k, c := range counts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[k] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			files[k], errs[k] = writeAssociation(ctx, m, tables, dir, c, opts)
			if errs[k] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	// Report the error that stopped the others, not the cancellations it caused.
	var first error
	for _, err := range errs {
		if err != nil && (first == nil || errors.Is(first, context.Canceled) && !errors.Is(err, context.Canceled)) {
			first = err
		}
	}
	if first != nil {
		return sum, first
	}
	for _, fs := range files {
		sum.Files = append(sum.Files, fs...)
	}
	return sum, nil
}

// rowWriter writes one table's rows to one file.
type rowWriter interface {
	write(p *Participant, row int) error
	close() error
}

func writeAssociation(ctx context.Context, m *model, tables []*table, dir string, c AssociationCount, opts Options) (files []File, err error) {
	folder := filepath.Join(dir, c.Association)
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return nil, fmt.Errorf("create association folder: %w", err)
	}
	writers := make([]rowWriter, len(tables))
	tmps := make([]string, len(tables))
	defer func() {
		if err == nil {
			return
		}
		for k, w := range writers {
			if w != nil {
				_ = w.close()
				_ = os.Remove(tmps[k])
			}
		}
	}()
	for k, t := range tables {
		name := t.name + "." + opts.Format
		files = append(files, File{Association: c.Association, Table: t.name, Path: filepath.Join(folder, name)})
		tmps[k] = filepath.Join(folder, "."+name+".tmp")
		if opts.Format == "parquet" {
			writers[k], err = newParquetWriter(tmps[k], t)
		} else {
			writers[k], err = newCSVWriter(tmps[k], t)
		}
		if err != nil {
			return nil, fmt.Errorf("create %s: %w", files[k].Path, err)
		}
	}
	err = generate(ctx, m, opts, c.Association, c.Participants, func(p Participant) error {
		for k, t := range tables {
			n := t.rows(&p)
			for row := 0; row < n; row++ {
				if err := writers[k].write(&p, row); err != nil {
					return fmt.Errorf("write %s: %w", files[k].Path, err)
				}
			}
			files[k].Rows += int64(n)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("generate %s: %w", c.Association, err)
	}
	for k := range writers {
		w := writers[k]
		writers[k] = nil
		if err := w.close(); err != nil {
			_ = os.Remove(tmps[k])
			return nil, fmt.Errorf("write %s: %w", files[k].Path, err)
		}
	}
	for k, f := range files {
		if err := os.Rename(tmps[k], f.Path); err != nil {
			return nil, fmt.Errorf("rename %s into place: %w", f.Path, err)
		}
		// A folder holds one export: drop this table's file in the other formats.
		for _, other := range Formats {
			if other != opts.Format {
				if err := os.Remove(filepath.Join(folder, f.Table+"."+other)); err != nil && !errors.Is(err, os.ErrNotExist) {
					return nil, fmt.Errorf("remove an older export: %w", err)
				}
			}
		}
	}
	return files, nil
}

// csvWriter writes UTF-8 CSV: comma, header row, RFC 4180 quoting, null as an empty field.
type csvWriter struct {
	f   *os.File
	buf *bufio.Writer
	w   *csv.Writer
	t   *table
	rec []string
}

func newCSVWriter(path string, t *table) (*csvWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	buf := bufio.NewWriterSize(f, 256<<10)
	w := &csvWriter{f: f, buf: buf, w: csv.NewWriter(buf), t: t}
	for _, c := range t.columns {
		w.rec = append(w.rec, c.name)
	}
	if err := w.w.Write(w.rec); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

func (w *csvWriter) write(p *Participant, row int) error {
	w.rec = w.t.appendRow(w.rec[:0], p, row)
	return w.w.Write(w.rec)
}

func (w *csvWriter) close() error {
	w.w.Flush()
	return errors.Join(w.w.Error(), w.buf.Flush(), w.f.Close())
}

// Parquet layout: record batches of batchRows, appended to row groups of at most
// rowGroupRows, so a writer holds at most one row group's encoded pages.
const (
	batchRows    = 8192
	rowGroupRows = 64 * 1024
)

// ArrowSchema is the Arrow schema of the Parquet export file for table: the identity columns
// and the schema's columns as in Columns, months as YYYY-MM strings. Its metadata marks the
// data synthetic. It returns nil for a table the schema does not have.
func ArrowSchema(tableName string) *arrow.Schema {
	for _, t := range mustTables() {
		if t.name == tableName {
			return t.arrowSchema()
		}
	}
	return nil
}

func (t *table) arrowSchema() *arrow.Schema {
	fields := make([]arrow.Field, len(t.columns))
	for i, c := range t.columns {
		var typ arrow.DataType
		switch c.field.kind {
		case kindInt:
			typ = arrow.PrimitiveTypes.Int16
		case kindBool:
			typ = arrow.FixedWidthTypes.Boolean
		case kindDate:
			typ = arrow.FixedWidthTypes.Date32
		default:
			typ = arrow.BinaryTypes.String
		}
		fields[i] = arrow.Field{Name: c.name, Type: typ, Nullable: c.nullable}
	}
	md := arrow.NewMetadata(
		[]string{"samsyn.schema_version", "samsyn.table", "samsyn.synthetic"},
		[]string{fmt.Sprint(schemas.Version), t.name, "true"})
	return arrow.NewSchema(fields, &md)
}

type parquetWriter struct {
	f   *os.File
	buf *bufio.Writer
	fw  *pqarrow.FileWriter
	rb  *array.RecordBuilder
	t   *table
	n   int
}

func newParquetWriter(path string, t *table) (*parquetWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	buf := bufio.NewWriterSize(f, 256<<10)
	mem := memory.NewGoAllocator()
	props := parquet.NewWriterProperties(
		parquet.WithAllocator(mem),
		parquet.WithCompression(compress.Codecs.Snappy),
		parquet.WithMaxRowGroupLength(rowGroupRows),
		parquet.WithCreatedBy("samsyn synth"),
		// Identities are unique per participant: a dictionary would only cost memory.
		parquet.WithDictionaryFor(ColPersonnummer, false),
		parquet.WithDictionaryFor(ColAnonymousID, false),
	)
	schema := t.arrowSchema()
	fw, err := pqarrow.NewFileWriter(schema, buf, props, pqarrow.NewArrowWriterProperties(pqarrow.WithAllocator(mem)))
	if err != nil {
		f.Close()
		return nil, err
	}
	rb := array.NewRecordBuilder(mem, schema)
	rb.Reserve(batchRows)
	return &parquetWriter{f: f, buf: buf, fw: fw, rb: rb, t: t}, nil
}

func (w *parquetWriter) write(p *Participant, row int) error {
	for i := range w.t.columns {
		c := &w.t.columns[i]
		b := w.rb.Field(i)
		switch c.field.kind {
		case kindInt:
			if v, ok := c.field.int(p, row); ok {
				b.(*array.Int16Builder).Append(int16(v))
			} else {
				b.AppendNull()
			}
		case kindBool:
			if v, ok := c.field.bool(p, row); ok {
				b.(*array.BooleanBuilder).Append(v)
			} else {
				b.AppendNull()
			}
		case kindDate:
			if v, ok := c.field.date(p, row); ok {
				b.(*array.Date32Builder).Append(arrow.Date32(v))
			} else {
				b.AppendNull()
			}
		default:
			if v := c.field.str(p, row); v != "" || !c.nullable {
				b.(*array.StringBuilder).Append(v)
			} else {
				b.AppendNull()
			}
		}
	}
	w.n++
	if w.n == batchRows {
		return w.flush()
	}
	return nil
}

func (w *parquetWriter) flush() error {
	rec := w.rb.NewRecord()
	defer rec.Release()
	w.n = 0
	return w.fw.WriteBuffered(rec)
}

func (w *parquetWriter) close() error {
	var err error
	if w.n > 0 {
		err = w.flush()
	}
	w.rb.Release()
	return errors.Join(err, w.fw.Close(), w.buf.Flush(), w.f.Close())
}
