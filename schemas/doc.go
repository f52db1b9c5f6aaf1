// Package schemas owns Samsyn's canonical data model: the tables every association's node
// stores, their columns, keys and types, the bilingual code lists and bandings those columns
// are bound to, the Arrow schemas and DuckDB DDL derived from them, and the schema version.
//
// The model is data (v1/tables.yaml and v1/codes/*.yaml, embedded in the binary); this
// package only loads, checks and serves it. Nothing else in the module may hard-code a code
// list: ask this package. It must never hold or see participant data.
package schemas
