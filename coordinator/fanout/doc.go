// Package fanout sends one signed ticket to each of many nodes in parallel, each under its
// own deadline, retrying only transient failures with backoff, and reports every node's
// progress and outcome. With the fail policy the first permanent failure stops the rest;
// with the partial policy every node is tried and the caller marks what is missing.
//
// It must never retry a refusal (a node's verdict is final for that ticket) and never wait
// on a node longer than its deadline.
package fanout
