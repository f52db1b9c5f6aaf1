// Package federation holds the reference federation (federation.yaml): which associations run
// a node, and the addresses of the nodes and the coordinator. It is configuration, embedded so
// that the demo runs from any folder; it must never hold secrets or keys.
package federation
