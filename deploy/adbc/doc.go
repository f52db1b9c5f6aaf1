// Package adbc tests the node's Flight SQL service with a client this project did not write:
// the ADBC Flight SQL driver for Go. It is its own module because that driver pulls in an
// older Arrow major version, and the main module keeps exactly one.
package adbc
