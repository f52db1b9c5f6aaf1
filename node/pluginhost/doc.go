// Package pluginhost starts the node's analysis plugins: separate processes, spoken to over
// gRPC through hashicorp/go-plugin, each pinned by the SHA-256 of its binary so that only the
// exact build the catalog authority signed can run next to the association's data.
//
// A plugin is verified before it starts (and again by go-plugin right before exec), gets no
// environment from the node (SkipHostEnv: only go-plugin's own handshake variables), an
// address-space limit, and a deadline; it is killed when its call ends, whatever the outcome.
// What it returns is checked against the shape the request declares before anything else
// sees it, and leaves the node only through disclosure control.
package pluginhost
