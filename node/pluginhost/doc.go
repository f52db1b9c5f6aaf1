// Package pluginhost starts the node's analysis plugins: separate processes, spoken to over
// gRPC through hashicorp/go-plugin, each pinned by the SHA-256 of its binary so that only the
// exact build the association approved can run next to its data.
//
// It must never start a plugin whose checksum does not match, never pass the node secret or
// participant rows to a plugin on its own initiative, and never let a plugin's output leave
// the node except through disclosure control. The plugin protocol itself is not built yet;
// this package fixes the handshake and the pinning every plugin will go through.
package pluginhost
