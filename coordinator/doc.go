// Package coordinator is the federation's coordinator: the registry of nodes, the study
// workflow and its store, the fan-out of signed tickets to the nodes, the merge of their
// protected tables, the output checks before release, the HTTP API and the dashboard.
//
// The coordinator only ever sees protected tables. It must never ask a node for anything
// but a signed, approved catalog query, never release a merged cell below the threshold or
// derived from a suppressed node cell, and never import the node; the two meet only in
// queries/ and schemas/.
package coordinator
