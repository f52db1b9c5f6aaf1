package export

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/parquet"
	"github.com/apache/arrow/go/v17/parquet/compress"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"
	"github.com/xuri/excelize/v2"
)

// Text formats one value; a null is the empty string.
func Text(a arrow.Array, i int) string {
	if a.IsNull(i) {
		return ""
	}
	switch v := a.(type) {
	case *array.String:
		return v.Value(i)
	case *array.Int64:
		return strconv.FormatInt(v.Value(i), 10)
	case *array.Float64:
		return strconv.FormatFloat(v.Value(i), 'f', -1, 64)
	case *array.Boolean:
		return strconv.FormatBool(v.Value(i))
	}
	return a.ValueStr(i)
}

// Value is one value for JSON and XLSX: numbers stay numbers, null is nil.
func Value(a arrow.Array, i int) any {
	if a.IsNull(i) {
		return nil
	}
	switch v := a.(type) {
	case *array.Int64:
		return v.Value(i)
	case *array.Int32:
		return v.Value(i)
	case *array.Int16:
		return v.Value(i)
	case *array.Float64:
		return v.Value(i)
	case *array.Boolean:
		return v.Value(i)
	case *array.String:
		return v.Value(i)
	}
	return a.ValueStr(i)
}

// CSV writes the records with a header row of column names.
func CSV(w io.Writer, sc *arrow.Schema, recs ...arrow.Record) error {
	cw := csv.NewWriter(w)
	header := make([]string, sc.NumFields())
	for i, f := range sc.Fields() {
		header[i] = f.Name
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	for _, rec := range recs {
		row := make([]string, rec.NumCols())
		for r := 0; r < int(rec.NumRows()); r++ {
			for c := range row {
				row[c] = Text(rec.Column(c), r)
			}
			if err := cw.Write(row); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// JSON writes the records as an array of objects.
func JSON(w io.Writer, sc *arrow.Schema, recs ...arrow.Record) error {
	var rows []map[string]any
	for _, rec := range recs {
		for r := 0; r < int(rec.NumRows()); r++ {
			row := make(map[string]any, rec.NumCols())
			for c := 0; c < int(rec.NumCols()); c++ {
				row[sc.Field(c).Name] = Value(rec.Column(c), r)
			}
			rows = append(rows, row)
		}
	}
	if rows == nil {
		rows = []map[string]any{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

// Parquet writes the records as one zstd-compressed Parquet file. The root of its schema is
// written as required, as DuckDB and Spark write it: the Arrow writer's default (repeated, an
// old parquet-mr habit) makes readers that honour it, such as hyparquet, look for
// repetition levels the pages do not have and fail, whatever the compression.
func Parquet(w io.Writer, sc *arrow.Schema, recs ...arrow.Record) error {
	props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd), parquet.WithRootRepetition(parquet.Repetitions.Required))
	pw, err := pqarrow.NewFileWriter(sc, w, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if err := pw.Write(rec); err != nil {
			return err
		}
	}
	return pw.Close()
}

// XLSX writes the records to one sheet with a header row of column names.
func XLSX(w io.Writer, sheet string, sc *arrow.Schema, recs ...arrow.Record) error {
	f := excelize.NewFile()
	defer f.Close()
	if err := f.SetSheetName("Sheet1", sheet); err != nil {
		return err
	}
	header := make([]any, sc.NumFields())
	for i, fl := range sc.Fields() {
		header[i] = fl.Name
	}
	if err := f.SetSheetRow(sheet, "A1", &header); err != nil {
		return err
	}
	line := 2
	for _, rec := range recs {
		for r := 0; r < int(rec.NumRows()); r++ {
			row := make([]any, rec.NumCols())
			for c := range row {
				row[c] = Value(rec.Column(c), r)
			}
			cell, _ := excelize.CoordinatesToCellName(1, line)
			if err := f.SetSheetRow(sheet, cell, &row); err != nil {
				return err
			}
			line++
		}
	}
	return f.Write(w)
}

// Bytes runs a writer into memory.
func Bytes(write func(io.Writer) error) ([]byte, error) {
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return buf.Bytes(), nil
}
