// Package state is the coordinator's embedded DuckDB store: studies and their transitions,
// approvals, dispatches to nodes with the protected tables they returned, released results
// with their output checks, and API tokens (stored only as hashes).
//
// Every write is its own transaction, so a coordinator killed at any point restarts with
// nothing lost and knows which node already answered which query. It must never store a
// token in clear, and holds nothing but protected tables.
package state
