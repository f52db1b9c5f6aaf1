// Package demo is the supervisor behind `samsyn demo`: it builds a local federation on
// synthetic data (PKI, keys, signed catalog, eight node stores, coordinator config, tokens),
// starts a node process per association and a coordinator as children of the samsyn binary,
// waits until all are healthy, seeds the standard studies, and stops every child when it is
// stopped. It is for demonstration only: every participant in it is synthetic, and it must
// never be pointed at real data.
package demo
