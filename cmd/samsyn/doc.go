// Command samsyn is the one Samsyn binary: node, coordinator, demo, study, catalog, sql and
// synth subcommands. Each command only parses flags, loads config, builds the logger, then
// calls into the package that owns the work; it must never hold product logic itself.
package main
