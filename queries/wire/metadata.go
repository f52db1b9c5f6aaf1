package wire

// Schema metadata keys of a released table: the node sets them on the Arrow schema of every
// DoGet stream, and the coordinator reads them to label, check and merge node tables.
const (
	MetaNode          = "samsyn.node"           // the node id that produced the table
	MetaAssociation   = "samsyn.association"    // the association the node serves
	MetaStudy         = "samsyn.study"          // the study id from the ticket
	MetaQueryID       = "samsyn.query_id"       // the catalog query id
	MetaQueryHash     = "samsyn.query_hash"     // hex SHA-256 of the canonical catalog entry
	MetaSnapshot      = "samsyn.snapshot"       // the id of the data snapshot (import) queried
	MetaDisclosure    = "samsyn.disclosure"     // JSON of the disclosure parameters applied
	MetaSchemaVersion = "samsyn.schema_version" // the canonical schema version of the node's data
	MetaAuditSeq      = "samsyn.audit_seq"      // the node's audit entry for this answer
	MetaAuditHead     = "samsyn.audit_head"     // that entry's hash: the coordinator keeps it as an anchor
	MetaKind          = "samsyn.kind"           // KindTable or KindContribution
	MetaCohort        = "samsyn.cohort"         // a contribution's cohort, comma-separated, sorted
	MetaRound         = "samsyn.round"          // a contribution's round
	MetaLayout        = "samsyn.layout"         // a contribution's layout hash (disclosure.Layout.Hash)
	MetaStep          = "samsyn.step"           // a model step's key (Ticket.StepKey)
	MetaState         = "samsyn.state"          // a model step's coefficients, JSON
)

// Kinds of a node's answer.
const (
	KindTable        = "table"        // the node's own protected table (a cohort of one)
	KindContribution = "contribution" // a masked contribution to a pooled release
)

// ColMasked is the one column of a contribution: the masked vector, uint64 modulo 2^64.
const ColMasked = "masked"

// Schema metadata of a released (pooled or merged) table as the coordinator stores it.
const (
	MetaAssociations = "samsyn.associations"         // associations in the result, comma-separated
	MetaMissing      = "samsyn.missing_associations" // approving associations missing from it
	MetaPooled       = "samsyn.pooled"               // "true" when protected once after pooling
)

// gRPC metadata (header and trailer) names. gRPC requires them in lower case.
const (
	// HeaderReason carries Reason(err) in the trailer of a refused DoGet, so the coordinator
	// can record why a node refused without parsing the status message.
	HeaderReason = "samsyn-reason"
	// HeaderNode carries the responding node's id in the response header.
	HeaderNode = "samsyn-node"
)
