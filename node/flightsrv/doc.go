// Package flightsrv is the node's Arrow Flight service, the only door through which anything
// leaves a node. DoGet takes a signed ticket, verifies it fully (coordinator signature,
// catalog signature, the association's approval, time window, nonce, policy), runs the
// catalog query through the executor, writes the audit entry, and only then streams the
// protected table, with its provenance in the schema metadata.
//
// It must never stream an unprotected aggregate or a participant-level row, never answer an
// unverified ticket, and never send data before its audit entry is on disk. Every refusal is
// audited with its reason.
package flightsrv
