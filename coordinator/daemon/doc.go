// Package daemon wires the coordinator daemon from its configuration: state store, signed
// catalog, node clients over mutual TLS, the study worker, the HTTP API and the metrics and
// health endpoints, run together until the context ends. It holds no logic of its own and
// must never start serving before the store is open and every node client is configured.
package daemon
