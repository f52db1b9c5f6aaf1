// Package audit owns the append-only, hash-chained audit log that a node keeps of every ticket
// it releases or refuses, every import and every local action, and that the coordinator keeps
// of study approvals and releases.
//
// The log is one JSON object per line. The writer numbers each entry, stamps it in UTC, links
// it to the previous line by that line's hash, hashes it, and syncs it to disk before Append
// returns. One writer holds the file at a time (an exclusive flock), and it refuses to append
// to a log whose chain is already broken. Verify reads a log and names the first line that was
// modified, removed, inserted, reordered or cut short.
//
// The chain shows tampering inside the log; it cannot show that its tail was cut off at a line
// boundary or rewritten in full. Anchor it by copying Writer.Head somewhere else now and then.
//
// An entry must never record participant rows, participant keys, record keys, personal identity
// numbers, tokens or secrets: only ids, hashes, counts and reasons. Append refuses field names
// that suggest such values and any value that is a valid personal identity number.
package audit
