// Package sqlsrv is the node's Arrow Flight SQL service for the association's own analysts:
// a local-only listener, authenticated by a bearer token kept in a file only the node's user
// can read, where every statement runs in a read-only transaction with no file access, the
// metadata calls (catalogs, schemas, tables with their columns, table types, SQL info) let
// generic clients browse, and every statement is audited locally. Prepared statements (what
// JDBC tools use) run the same way: a handle is a random id for the statement text and its
// bound parameters, held in memory with a bound on how many stay open and an idle expiry;
// each execution is one audit entry, with the number of parameters and never their values.
//
// It must never listen off the local machine and never run a statement that writes; it is
// the one place participant-level rows are visible, and only to the node's own analysts.
package sqlsrv
