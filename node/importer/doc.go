// Package importer reads an association's exports (CSV or Parquet, one table at a time),
// validates every row against the canonical schema and code lists, replaces personal
// identity numbers by keyed hashes, and upserts the rows into the node store.
//
// An import is all-or-nothing: any problem in any file leaves the store exactly as it was,
// and the caller gets every problem as file:line: column: found: expected. A personal
// identity number is hashed the moment it is read, in a memory-only staging database that
// never spills to disk; it must never be written to the store, a log or an error message.
package importer
