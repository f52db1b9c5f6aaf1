// Package node is the daemon each coordination association runs. Its sub-packages own the
// node's configuration (config), its DuckDB store and import log (store), and the importer
// that validates an association's exports and writes them to the store (importer).
//
// The node must never send a participant-level row, a participant key or a personal
// identity number anywhere: only protected aggregates leave it. It must never import the
// coordinator; the two meet only in queries/ and schemas/.
package node
