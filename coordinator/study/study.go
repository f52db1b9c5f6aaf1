package study

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/samsyn/samsyn/queries"
	"github.com/samsyn/samsyn/queries/wire"
)

// State is where a study stands.
type State string

// The states of a study.
const (
	Submitted        State = "submitted"
	AwaitingApproval State = "awaiting_approval"
	Running          State = "running"
	Checking         State = "checking"
	Released         State = "released"
	Refused          State = "refused"
	Failed           State = "failed"
)

// Final reports whether no transition leaves s.
func (s State) Final() bool { return s == Released || s == Refused || s == Failed }

var transitions = map[State][]State{
	Submitted:        {AwaitingApproval, Refused},
	AwaitingApproval: {Running, Refused},
	Running:          {Checking, Failed},
	Checking:         {Released, Failed},
}

// CanMove reports whether a study may move from one state to another.
func CanMove(from, to State) bool { return slices.Contains(transitions[from], to) }

// Failure policies for a node that does not answer.
const (
	OnFailurePartial = "partial"
	OnFailureFail    = "fail"
)

// Request is the study file an evaluator submits.
type Request struct {
	Title         string       `yaml:"title" json:"title"`
	Purpose       string       `yaml:"purpose" json:"purpose"`
	Queries       []QueryReq   `yaml:"queries" json:"queries"`
	Associations  Associations `yaml:"associations" json:"associations"`
	OnNodeFailure string       `yaml:"on_node_failure" json:"on_node_failure"`
	// Standing asks for a standing study: approved once, rerun on a schedule until the
	// approvals end.
	Standing *StandingReq `yaml:"standing,omitempty" json:"standing,omitempty"`
}

// StandingReq is the standing part of a study file.
type StandingReq struct {
	Months   int    `yaml:"months" json:"months"`     // how long the approvals hold, 1–24
	Schedule string `yaml:"schedule" json:"schedule"` // quarterly, or new_data (when a node's data changes)
}

// Schedules of a standing study.
const (
	ScheduleQuarterly = "quarterly"
	ScheduleNewData   = "new_data"
)

// Standing is a standing study's terms: its approvals hold until Until.
type Standing struct {
	Months   int       `json:"months"`
	Schedule string    `json:"schedule"`
	Until    time.Time `json:"until"`
}

// QueryReq is one catalog query of a request.
type QueryReq struct {
	ID     string            `yaml:"id" json:"id"`
	Params map[string]string `yaml:"params" json:"params"`
}

// Associations is "all" or a list of association ids.
type Associations []string

// UnmarshalYAML accepts the word all or a list.
func (a *Associations) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != "all" {
			return fmt.Errorf("line %d: associations: %q: expected all or a list of association ids", n.Line, n.Value)
		}
		*a = nil
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	if len(list) == 0 {
		return fmt.Errorf("line %d: associations: empty list: expected all or at least one association id", n.Line)
	}
	*a = list
	return nil
}

// ParseRequest decodes a study file strictly.
func ParseRequest(name string, raw []byte) (*Request, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var r Request
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return &r, nil
}

// Query is a validated query of a study.
type Query struct {
	ID     string            `json:"id"`
	Hash   string            `json:"hash"`
	Params map[string]string `json:"params"`
}

// Study is a submitted study.
type Study struct {
	ID            string    `json:"id"`
	Title         string    `json:"title"`
	Purpose       string    `json:"purpose"`
	Evaluator     string    `json:"evaluator"`
	Queries       []Query   `json:"queries"`
	Associations  []string  `json:"associations"`
	OnNodeFailure string    `json:"on_node_failure"`
	State         State     `json:"state"`
	CreatedAt     time.Time `json:"created_at"`
	Standing      *Standing `json:"standing,omitempty"`
	// Parent and Run mark a rerun of a standing study: its tickets carry the parent's id
	// (the one the approvals sign) and the run number.
	Parent string `json:"parent,omitempty"`
	Run    int    `json:"run,omitempty"`
	// Revoked lists, for a standing study, the associations whose data owners withdrew their
	// standing approval, and when: no later run asks them.
	Revoked map[string]time.Time `json:"revoked,omitempty"`
}

// TicketStudy is the study id a node sees for s: the standing parent's for a rerun.
func (s *Study) TicketStudy() string {
	if s.Parent != "" {
		return s.Parent
	}
	return s.ID
}

// approvalMessage is what the data owner signs for query i of s.
func (s *Study) approvalMessage(association string, i int) []byte {
	q := s.Queries[i]
	if s.Standing != nil {
		return wire.StandingApprovalMessage(s.TicketStudy(), association, q.ID, q.Hash, q.Params, s.Standing.Until)
	}
	return wire.ApprovalMessage(s.TicketStudy(), association, q.ID, q.Hash, q.Params)
}

// NewID returns a fresh study id.
func NewID() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "st-" + hex.EncodeToString(b)
}

// Validate checks the request against the catalog and the federation and returns the study
// it describes. Errors name the query and parameter.
func Validate(r *Request, cat *queries.Catalog, federation []string, evaluator string, now time.Time) (*Study, error) {
	var errs []error
	if strings.TrimSpace(r.Title) == "" {
		errs = append(errs, errors.New("title: missing"))
	}
	if strings.TrimSpace(r.Purpose) == "" {
		errs = append(errs, errors.New("purpose: missing: say why the study is needed"))
	}
	if err := checkText("title", r.Title, 300); err != nil {
		errs = append(errs, err)
	}
	if err := checkText("purpose", r.Purpose, 4000); err != nil {
		errs = append(errs, err)
	}
	if len(r.Queries) == 0 {
		errs = append(errs, errors.New("queries: none: expected at least one catalog query"))
	}
	if len(r.Queries) > 100 {
		errs = append(errs, fmt.Errorf("queries: %d: expected at most 100", len(r.Queries)))
	}
	policy := r.OnNodeFailure
	if policy == "" {
		policy = OnFailureFail
	}
	if policy != OnFailurePartial && policy != OnFailureFail {
		errs = append(errs, fmt.Errorf("on_node_failure: %q: expected partial or fail", r.OnNodeFailure))
	}
	s := &Study{ID: NewID(), Title: strings.TrimSpace(r.Title), Purpose: strings.TrimSpace(r.Purpose), Evaluator: evaluator,
		OnNodeFailure: policy, State: Submitted, CreatedAt: now.UTC()}
	for i, q := range r.Queries {
		e, ok := cat.Get(q.ID)
		if !ok {
			errs = append(errs, fmt.Errorf("queries[%d]: %q is not in the signed catalog (known: %s)", i, q.ID, strings.Join(cat.IDs(), ", ")))
			continue
		}
		b, err := e.Bind(q.Params)
		if err != nil {
			errs = append(errs, fmt.Errorf("queries[%d]: %w", i, err))
			continue
		}
		s.Queries = append(s.Queries, Query{ID: q.ID, Hash: e.Hash(), Params: b.Text})
	}
	if len(r.Associations) == 0 {
		s.Associations = append([]string{}, federation...)
	} else {
		for _, a := range r.Associations {
			if !slices.Contains(federation, a) {
				errs = append(errs, fmt.Errorf("associations: %q is not in the federation (%s)", a, strings.Join(federation, ", ")))
				continue
			}
			if !slices.Contains(s.Associations, a) {
				s.Associations = append(s.Associations, a)
			}
		}
	}
	if st := r.Standing; st != nil {
		switch {
		case st.Months < 1 || st.Months > 24:
			errs = append(errs, fmt.Errorf("standing.months: %d: expected 1 to 24", st.Months))
		case st.Schedule != ScheduleQuarterly && st.Schedule != ScheduleNewData:
			errs = append(errs, fmt.Errorf("standing.schedule: %q: expected quarterly or new_data", st.Schedule))
		default:
			until := time.Date(now.Year(), now.Month()+time.Month(st.Months), now.Day(), 23, 59, 59, 0, time.UTC)
			s.Standing = &Standing{Months: st.Months, Schedule: st.Schedule, Until: until}
		}
	}
	if len(s.Associations) == 1 {
		for i, q := range s.Queries {
			if e, _ := cat.Get(q.ID); e.IsAnalysis() && e.Analysis.Kind == queries.AnalysisLogit {
				errs = append(errs, fmt.Errorf("queries[%d]: %s is a model: it runs only across two or more associations (one association's own cross-products would be visible)", i, q.ID))
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return s, nil
}

// Decision is an association's answer to a study.
type Decision string

// The decisions.
const (
	Approve Decision = "approved"
	Refuse  Decision = "refused"
)

// Approval is one association's decision, with its signature per query when approving.
type Approval struct {
	Association string    `json:"association"`
	Decision    Decision  `json:"decision"`
	Reason      string    `json:"reason,omitempty"`
	Signatures  [][]byte  `json:"signatures,omitempty"` // one per query, in study order
	Actor       string    `json:"actor"`
	At          time.Time `json:"at"`
}

// SignApproval signs every query of s for association with the data owner's key.
func SignApproval(s *Study, association string, key ed25519.PrivateKey) [][]byte {
	sigs := make([][]byte, len(s.Queries))
	for i := range s.Queries {
		sigs[i] = ed25519.Sign(key, s.approvalMessage(association, i))
	}
	return sigs
}

// ErrInvalid is returned for a study request or decision that is wrong as written: the
// client's to fix (HTTP 4xx), unlike a failure to store it.
var ErrInvalid = errors.New("invalid")

// checkText refuses control characters (NUL included) and over-long text in a free-text field.
func checkText(field, v string, max int) error {
	if len(v) > max {
		return fmt.Errorf("%s: %d bytes: expected at most %d", field, len(v), max)
	}
	for i, r := range v {
		if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f || r == utf8.RuneError {
			return fmt.Errorf("%s: a control or invalid character at byte %d: expected printable UTF-8 text", field, i)
		}
	}
	return nil
}

// ErrBadApproval is returned for an approval whose signatures do not verify.
var ErrBadApproval = errors.New("approval signature does not verify")

// CheckApproval verifies an approval's signatures with the association's public key.
func CheckApproval(s *Study, a Approval, pub ed25519.PublicKey) error {
	if a.Decision == Refuse {
		if strings.TrimSpace(a.Reason) == "" {
			return fmt.Errorf("%w: a refusal needs a reason", ErrInvalid)
		}
		if err := checkText("reason", a.Reason, 2000); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return nil
	}
	if a.Decision != Approve {
		return fmt.Errorf("%w: decision %q: expected approved or refused", ErrInvalid, a.Decision)
	}
	if len(a.Signatures) != len(s.Queries) {
		return fmt.Errorf("%w: %d signatures for %d queries", ErrBadApproval, len(a.Signatures), len(s.Queries))
	}
	for i, q := range s.Queries {
		if !ed25519.Verify(pub, s.approvalMessage(a.Association, i), a.Signatures[i]) {
			return fmt.Errorf("%w: query %s (%d) for %s", ErrBadApproval, q.ID, i, a.Association)
		}
	}
	return nil
}
