// Package config owns the node's configuration file (node.yaml) and its secret file: strict
// loading with file:line errors, validation, defaults, and scaffolding a new node.
//
// It must never log or print the secret, and must refuse a secret file that others can read.
package config
