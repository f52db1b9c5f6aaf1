// Package merge combines the protected tables that nodes release for one catalog query into
// the federation's table: counts summed by cell, a cell unknown if any node suppressed it,
// structural zeros kept as zeros, the threshold applied again, measures combined only where
// every contributing node released them.
//
// It is a pure function over Arrow records. It must never reconstruct a suppressed value,
// and never release a merged cell that any contributing node withheld.
package merge
