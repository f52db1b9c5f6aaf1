// Package study owns the study workflow: the study request an evaluator writes, its
// validation against the signed catalog and the parameter domains, the states a study moves
// through (submitted, awaiting_approval, running, checking, released, refused, failed), and
// the associations' approvals, which are signatures by each data owner's key.
//
// It must never let a study run on an association that has not approved it, nor change a
// refusal: a refusal is final for that association.
package study
