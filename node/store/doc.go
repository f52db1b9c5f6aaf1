// Package store owns a node's DuckDB file: opening it with extensions locked down, migrating
// it to the canonical schema, the import log and the data snapshot id derived from it.
//
// The store holds participant rows keyed by participant_key; it must never hold a personal
// identity number, and nothing in it may be handed out of the node except through the
// disclosure-controlled executor.
package store
