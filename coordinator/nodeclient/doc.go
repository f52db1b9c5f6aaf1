// Package nodeclient is the coordinator's long-lived mutual-TLS Arrow Flight client to one
// node: it presents a signed ticket and reads back the protected table with its provenance,
// and asks the node's gRPC health service whether it is serving.
//
// It must never connect without mutual TLS pinned to the node's identity, and never hand on
// a table whose provenance does not match the ticket it sent.
package nodeclient
