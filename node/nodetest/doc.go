// Package nodetest is test support for the node's packages: it fills a real store with
// synthetic rows straight through SQL. It is imported only by tests and must never be
// imported by production code.
package nodetest
