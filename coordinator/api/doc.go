// Package api is the coordinator's HTTP API: bearer tokens with roles (steering, evaluator,
// association:<id>, admin), the catalog, studies and approvals, nodes, and released results
// by content negotiation (JSON, CSV, Arrow IPC stream, Parquet, XLSX).
//
// Every endpoint checks the caller's role; 401 means no valid token, 403 a token whose role
// may not do this. Errors are JSON with a stable code and a human message. It must never
// serve anything but released, merged tables, and never log a token.
package api
