// Package synth generates SYNTHETIC participant data for the demo, the tests and the
// benchmarks: invented people, invented episodes, invented answers. None of it comes from,
// or describes, a real person.
//
// It owns the synthetic model (the calibration that makes the invented data look like the
// MIA Vidare project of 2020-06-01 to 2022-09-30: about 1,900 participants over the eight
// coordination associations, their municipalities, referral parties, methods and outcomes)
// and the export files built from it: one folder per association with one CSV or Parquet
// file per table, in the same form a real association's export takes, so the node's importer
// reads them like any other. Instead of participant_key, each row carries the identity a real
// export carries: a personnummer for participants who consented, an anonymous_id for those
// who did not.
//
// Generation is deterministic and streams: participant i of association a is drawn from its
// own random stream seeded by (seed, a, i), rows are written as they are made, and memory
// stays bounded at any size (1,000,000 participants per association is the benchmark
// size). The same seed and options give byte-identical files.
//
// The personnummer it writes have valid dates and check digits and are unique across the
// federation by construction (see allocator), but they are computed, not drawn from any
// register: since the number space is shared with real people, a generated number may
// happen to equal a real person's. The package must therefore never be fed, or mixed with,
// real data, and its output must never be presented as anything but synthetic. It takes
// every code from package schemas; it never hard-codes a code list.
package synth
