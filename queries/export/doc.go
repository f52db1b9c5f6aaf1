// Package export writes Arrow records in the file formats people open: CSV, JSON rows,
// Parquet and a plain XLSX sheet. The coordinator's API and the analysts' SQL shell share it.
// It formats what it is given and must never decide what may be released.
package export
