// Package wire owns the bytes the node and the coordinator must agree on: the signed ticket a
// coordinator sends with a Flight DoGet, the messages that the catalog authority and an
// association's data owner sign, and the metadata keys that label a released Arrow table.
//
// A ticket is a JSON payload inside a JSON envelope that names the coordinator key that signed
// it. The node verifies the envelope signature over the payload bytes exactly as received, then
// the catalog authority's signature over the query's content hash, the association's approval
// of the study, the time window, its own catalog and policy, and last the nonce, so that a
// refused ticket does not use up its nonce. Every failure is a distinct sentinel error, and
// Reason maps it to a short stable code for the audit log.
//
// This package must never carry participant data: a ticket holds ids, hashes, parameters from
// coarse declared domains and signatures, nothing else. It must never accept a ticket it cannot
// fully verify: a Verifier missing any key, catalog, policy or nonce store refuses every ticket.
package wire
