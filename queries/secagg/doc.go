// Package secagg is secure aggregation for a cohort of nodes: each node adds to its vector of
// cells a pairwise mask for every other node of the cohort, so that the coordinator, summing
// the whole cohort's vectors modulo 2^64, learns the cohort's sum and nothing about any one
// node's vector. The construction is the pairwise masking of Bonawitz et al., "Practical
// Secure Aggregation for Privacy-Preserving Machine Learning" (CCS 2017), without its
// secret-sharing recovery: a cohort that loses a node is asked again, as a smaller cohort,
// in a new round with fresh masks, so a masked vector from an incomplete round is never
// unmasked.
//
// Each pair of nodes agrees a secret by X25519 (crypto/ecdh) from keys the federation pins
// in every node's configuration, so the coordinator cannot substitute a key of its own. The
// secret is expanded by HKDF-SHA256 into an AES-256-CTR key stream bound to the study, query,
// query hash, parameters, cohort and round: no two rounds share a mask.
//
// This package owns the arithmetic and the key derivation. It never sees a participant, a
// record key or a cell's meaning: it masks and sums vectors of integers. Its known limit: a
// node that colludes with the coordinator can remove its own masks but not another node's;
// k−1 colluding nodes of a cohort of k, with the coordinator, learn the last node's vector
// (docs/THREAT-MODEL.md).
package secagg
