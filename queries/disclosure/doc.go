// Package disclosure is Samsyn's statistical disclosure control, as pure functions over
// Arrow records: the cell key method (record keys, cell keys, a perturbation table), the
// threshold that suppresses small and empty cells, the mean and dominance rules for
// measures, the sparsity check that refuses a table whole, and the Policy that carries the
// parameters. Node and coordinator both apply it.
//
// It must never return a cell whose released count lies in 1–4, never release a measure of
// a suppressed cell, never expose a record key or a cell key in its output, and never allow
// a policy looser than Defaults.
package disclosure
