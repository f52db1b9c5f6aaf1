// Package proc is process plumbing shared by Samsyn's mains: the logger built from flags,
// a context cancelled by SIGINT and SIGTERM, and progress lines on a terminal.
//
// It is for cmd/ only. It must never hold product logic, and it must never log secrets,
// tokens or participant data: it only carries what callers hand it.
package proc
