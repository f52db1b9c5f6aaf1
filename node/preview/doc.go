// Package preview shows an association's own analysts what their node would release for a
// catalog query: the protected table exactly as the coordinator would receive it and, beside
// it, the true count of every cell and why each suppressed cell is suppressed.
//
// It is for the node's machine only. The true counts it shows must never be sent anywhere:
// nothing in this package talks to the network, and the Flight service never calls it.
package preview
