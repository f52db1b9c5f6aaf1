// Package executor runs approved catalog queries on a node's store: it binds the parameters,
// runs the aggregate that package queries generates around the entry's view (never the view
// alone), under a statement deadline and the store's memory cap, with the node's record keys,
// and hands the aggregate to disclosure control.
//
// The unprotected aggregate must never leave the node: Run returns only the protected table;
// Aggregate, which returns true counts, exists for the node's own analysts (preview) and must
// never be wired to anything a remote peer can call.
package executor
