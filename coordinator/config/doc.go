// Package config owns the coordinator's configuration file (coordinator.yaml): strict
// loading with file:line errors, defaults, and validation; the coordinator refuses to start
// on any problem. It must never log key material or tokens: the file holds only paths and
// token hashes.
package config
