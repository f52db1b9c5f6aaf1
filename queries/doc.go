// Package queries is the contract between node and coordinator: the catalog of approved
// aggregate queries (catalog/*.yaml), their strict loading and validation, their canonical
// form and content hash, parameter domains and binding, the aggregate SQL a node wraps
// around a view, and the catalog authority's signatures.
//
// A catalog entry is a participant-level view plus a table spec; the node runs the view only
// inside an aggregate generated here, so only aggregates can leave. This package must never
// let a view through that reads anything but the schema's tables, exposes free text, dates or
// identifiers as dimensions, or lacks participant_key; and it must never run a query itself
// against a node's data.
package queries
