// Package state is the coordinator's embedded DuckDB store: studies and their transitions,
// approvals, dispatches to nodes with the protected tables they returned, and released
// results with their output checks. API users and their token hashes live in the tokens file
// (coordinator/config), not here.
//
// Every write is its own transaction, so a coordinator killed at any point restarts with
// nothing lost and knows which node already answered which query. It holds nothing but
// protected tables.
package state
