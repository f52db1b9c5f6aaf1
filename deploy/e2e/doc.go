// Package e2e holds the whole-federation tests: real node servers and a real coordinator on
// loopback with real mutual TLS, in-process and as child processes of the samsyn binary. It
// is the one place that imports both node and coordinator, and only from tests.
package e2e
