package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/samsyn/samsyn/coordinator"
	"github.com/samsyn/samsyn/coordinator/state"
	"github.com/samsyn/samsyn/coordinator/study"
	"github.com/samsyn/samsyn/queries"
)

// Roles.
const (
	RoleSteering  = "steering"
	RoleEvaluator = "evaluator"
	RoleAdmin     = "admin"
	RolePrefix    = "association:"
)

// User is an authenticated caller.
type User struct {
	Name string
	Role string
}

// Association is the association a role acts for, or "".
func (u User) Association() string { return strings.TrimPrefix(u.Role, RolePrefix) }

func (u User) isAssociation() bool { return strings.HasPrefix(u.Role, RolePrefix) }

// Token is a user with the SHA-256 (hex) of their bearer token.
type Token struct {
	User
	SHA256 string
}

// Server serves the API.
type Server struct {
	c        *coordinator.Coordinator
	store    *state.Store
	tokens   []Token
	logger   *slog.Logger
	mux      *http.ServeMux
	requests *prometheus.CounterVec // nil until Instrument
}

// New returns the API over a coordinator.
func New(c *coordinator.Coordinator, store *state.Store, tokens []Token, logger *slog.Logger) *Server {
	s := &Server{c: c, store: store, tokens: tokens, logger: logger.With("component", "api"), mux: http.NewServeMux()}
	anyone := []string{RoleSteering, RoleEvaluator, RoleAdmin, RolePrefix}
	s.handle("GET /api/v1/catalog", anyone, s.catalog)
	s.handle("GET /api/v1/nodes", []string{RoleAdmin, RoleSteering}, s.nodes)
	s.handle("POST /api/v1/studies", []string{RoleEvaluator}, s.submit)
	s.handle("GET /api/v1/studies", anyone, s.studies)
	s.handle("GET /api/v1/studies/{id}", anyone, s.study)
	s.handle("GET /api/v1/studies/{id}/approvals", anyone, s.approvals)
	s.handle("POST /api/v1/studies/{id}/approvals", []string{RolePrefix}, s.decide)
	s.handle("POST /api/v1/studies/{id}/revoke", []string{RolePrefix}, s.revoke)
	s.handle("GET /api/v1/studies/{id}/results", anyone, s.results)
	s.handle("GET /api/v1/studies/{id}/results/{query}", anyone, s.result)
	s.handle("GET /api/v1/whoami", anyone, func(w http.ResponseWriter, r *http.Request, u User) {
		writeJSON(w, http.StatusOK, map[string]string{"name": u.Name, "role": u.Role})
	})
	return s
}

// Handler returns the API's handler; other routes (dashboard, metrics) can be added to it.
func (s *Server) Handler() *http.ServeMux { return s.mux }

// Authenticate returns the user of a bearer token.
func (s *Server) Authenticate(header string) (User, bool) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || token == "" {
		return User{}, false
	}
	sum := sha256.Sum256([]byte(token))
	h := hex.EncodeToString(sum[:])
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare([]byte(h), []byte(t.SHA256)) == 1 {
			return t.User, true
		}
	}
	return User{}, false
}

func allowed(role string, roles []string) bool {
	for _, r := range roles {
		if r == role || r == RolePrefix && strings.HasPrefix(role, RolePrefix) {
			return true
		}
	}
	return false
}

type handler func(http.ResponseWriter, *http.Request, User)

// handle registers a route for the given roles: 401 without a valid token, 403 for others.
// Instrument counts the API's requests by route and status in reg
// (samsyn_coordinator_http_requests_total).
func (s *Server) Instrument(reg prometheus.Registerer) {
	s.requests = promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "samsyn_coordinator_http_requests_total", Help: "API requests by route and HTTP status.",
	}, []string{"route", "code"})
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *Server) handle(pattern string, roles []string, h handler) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if s.requests != nil {
			rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
			w = rec
			defer func() { s.requests.WithLabelValues(pattern, strconv.Itoa(rec.code)).Inc() }()
		}
		u, ok := s.Authenticate(r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="samsyn"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "a valid bearer token is required")
			return
		}
		if !allowed(u.Role, roles) {
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("role %s may not %s %s", u.Role, r.Method, r.URL.Path))
			return
		}
		h(w, r, u)
	})
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]apiError{"error": {Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// storeError maps state and coordinator errors to HTTP.
func (s *Server) storeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, state.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, state.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, coordinator.ErrForbidden):
		writeError(w, http.StatusForbidden, "forbidden", err.Error())
	case errors.Is(err, study.ErrBadApproval):
		writeError(w, http.StatusBadRequest, "bad_approval", err.Error())
	case errors.Is(err, state.ErrUnavailable):
		s.logger.Error("coordinator state unavailable", "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the coordinator cannot store its state just now; nothing was changed; try again later")
	default:
		s.logger.Error("request failed", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "the coordinator could not complete the request")
	}
}

type catalogEntry struct {
	ID          string                   `json:"id"`
	Version     int                      `json:"version"`
	Hash        string                   `json:"hash"`
	Title       map[string]string        `json:"title"`
	Description map[string]string        `json:"description"`
	Params      map[string]queries.Param `json:"params"`
	Dimensions  []queries.Dimension      `json:"dimensions"`
	Measures    []queries.Measure        `json:"measures"`
	Totals      bool                     `json:"totals"`
}

func (s *Server) catalog(w http.ResponseWriter, _ *http.Request, _ User) {
	cat := s.c.Catalog()
	out := []catalogEntry{}
	for _, id := range cat.IDs() {
		e := cat.Entries[id]
		out = append(out, catalogEntry{ID: e.ID, Version: e.Version, Hash: e.Hash(), Title: map[string]string{"sv": e.Title.SV, "en": e.Title.EN},
			Description: map[string]string{"sv": e.Description.SV, "en": e.Description.EN}, Params: e.Params, Dimensions: e.Dimensions, Measures: e.Measures, Totals: e.Totals})
	}
	writeJSON(w, http.StatusOK, out)
}

type nodeStatus struct {
	Association string `json:"association"`
	Status      string `json:"status"` // healthy, unhealthy, unreachable
	// Mode is "listen" (the coordinator dials the node) or "dial-out" (the node keeps a
	// tunnel open to the coordinator); TunnelSince is when that tunnel opened.
	Mode        string     `json:"mode"`
	TunnelSince *time.Time `json:"tunnel_since,omitempty"`
	// LastSeen is when the node last answered a health probe or a ticket.
	LastSeen      *time.Time `json:"last_seen,omitempty"`
	Error         string     `json:"error,omitempty"`
	LatencyMS     float64    `json:"latency_ms"`
	Snapshot      string     `json:"snapshot,omitempty"`
	LastImport    string     `json:"last_import,omitempty"`
	SchemaVersion int        `json:"schema_version,omitempty"`
	Catalog       string     `json:"catalog,omitempty"`
	// Audit is the latest audit entry the node reported with an answer: the anchor its
	// operator checks the node's log against (samsyn node audit verify --anchor).
	Audit *state.Anchor `json:"audit,omitempty"`
}

func (s *Server) nodes(w http.ResponseWriter, r *http.Request, _ User) {
	nodes := s.c.Nodes()
	out := make([]nodeStatus, len(nodes))
	anchors, err := s.store.Anchors(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	done := make(chan struct{}, len(nodes))
	for i, n := range nodes {
		go func() {
			defer func() { done <- struct{}{} }()
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			start := time.Now()
			st := nodeStatus{Association: n.Association, Status: "healthy", Mode: n.Mode}
			if st.Mode == "" {
				st.Mode = "listen"
			}
			if n.Tunnel != nil {
				if since, open := n.Tunnel(); open {
					st.TunnelSince = &since
				}
			}
			if a, ok := anchors[n.Association]; ok {
				st.Audit = &a
			}
			if n.Health == nil {
				st.Status = "unreachable"
			} else if err := n.Health(ctx); err != nil {
				st.Status, st.Error = "unreachable", err.Error()
				if strings.Contains(err.Error(), "NOT_SERVING") {
					st.Status = "unhealthy"
				}
			}
			st.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
			if st.Status == "healthy" {
				s.c.Seen(n.Association)
			}
			if seen := s.c.LastSeen(n.Association); !seen.IsZero() {
				st.LastSeen = &seen
			}
			if st.Status == "healthy" && n.Status != nil {
				if ns, err := n.Status(ctx); err == nil {
					st.Snapshot, st.LastImport, st.SchemaVersion, st.Catalog = ns.Snapshot, ns.LastImport, ns.SchemaVersion, ns.Catalog
				}
			}
			out[i] = st
		}()
	}
	for range nodes {
		<-done
	}
	writeJSON(w, http.StatusOK, out)
}

const maxStudyBytes = 1 << 20

func (s *Server) submit(w http.ResponseWriter, r *http.Request, u User) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxStudyBytes+1))
	if err != nil || len(raw) > maxStudyBytes {
		writeError(w, http.StatusBadRequest, "bad_request", "the study file could not be read or is over 1 MiB")
		return
	}
	req, err := study.ParseRequest("study", raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_study", err.Error())
		return
	}
	st, err := s.c.Submit(r.Context(), req, u.Name)
	if errors.Is(err, study.ErrInvalid) {
		writeError(w, http.StatusUnprocessableEntity, "invalid_study", err.Error())
		return
	}
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, st)
}

// visible reports whether u may see study st.
func visible(u User, st *study.Study) bool {
	switch {
	case u.Role == RoleAdmin:
		return true
	case u.Role == RoleEvaluator:
		return st.Evaluator == u.Name
	case u.Role == RoleSteering:
		return st.State == study.Released
	case u.isAssociation():
		return slices.Contains(st.Associations, u.Association())
	}
	return false
}

func (s *Server) load(w http.ResponseWriter, r *http.Request, u User) (*study.Study, bool) {
	st, err := s.store.Study(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeError(w, err)
		return nil, false
	}
	if !visible(u, st) {
		writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("role %s may not see study %s", u.Role, st.ID))
		return nil, false
	}
	return st, true
}

func (s *Server) studies(w http.ResponseWriter, r *http.Request, u User) {
	all, err := s.store.Studies(r.Context(), "")
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := []*study.Study{}
	for _, st := range all {
		if visible(u, st) {
			out = append(out, st)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// StudyStatus is a study with everything a follower wants to see.
type StudyStatus struct {
	*study.Study
	Approvals   []study.Approval                    `json:"approvals"`
	Transitions []state.Transition                  `json:"transitions"`
	Progress    map[string]coordinator.NodeProgress `json:"progress"`
	Dispatches  []state.Dispatch                    `json:"dispatches"`
	Results     []ResultInfo                        `json:"results"`
}

// ResultInfo describes one released table.
type ResultInfo struct {
	QueryIndex int             `json:"query_index"`
	QueryID    string          `json:"query_id"`
	Checks     json.RawMessage `json:"checks"`
	ReleasedAt time.Time       `json:"released_at"`
}

func (s *Server) study(w http.ResponseWriter, r *http.Request, u User) {
	st, ok := s.load(w, r, u)
	if !ok {
		return
	}
	out := StudyStatus{Study: st, Progress: s.c.Progress(st.ID)}
	var err error
	if out.Approvals, err = s.store.Approvals(r.Context(), st.ID); err != nil {
		s.storeError(w, err)
		return
	}
	if out.Transitions, err = s.store.Transitions(r.Context(), st.ID); err != nil {
		s.storeError(w, err)
		return
	}
	if out.Dispatches, err = s.store.Dispatches(r.Context(), st.ID); err != nil {
		s.storeError(w, err)
		return
	}
	res, err := s.store.Results(r.Context(), st.ID)
	if err != nil {
		s.storeError(w, err)
		return
	}
	for _, x := range res {
		out.Results = append(out.Results, ResultInfo{QueryIndex: x.QueryIndex, QueryID: x.QueryID, Checks: x.Checks, ReleasedAt: x.ReleasedAt})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) approvals(w http.ResponseWriter, r *http.Request, u User) {
	st, ok := s.load(w, r, u)
	if !ok {
		return
	}
	a, err := s.store.Approvals(r.Context(), st.ID)
	if err != nil {
		s.storeError(w, err)
		return
	}
	if a == nil {
		a = []study.Approval{}
	}
	writeJSON(w, http.StatusOK, a)
}

// Decision is the body of POST /approvals.
type Decision struct {
	Decision   study.Decision `json:"decision"`
	Reason     string         `json:"reason,omitempty"`
	Signatures [][]byte       `json:"signatures,omitempty"`
}

func (s *Server) decide(w http.ResponseWriter, r *http.Request, u User) {
	st, ok := s.load(w, r, u)
	if !ok {
		return
	}
	var d Decision
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "expected {decision, reason, signatures}: "+err.Error())
		return
	}
	a := study.Approval{Association: u.Association(), Decision: d.Decision, Reason: d.Reason, Signatures: d.Signatures, Actor: u.Name}
	if err := s.c.Decide(r.Context(), st.ID, a); err != nil {
		if errors.Is(err, study.ErrInvalid) {
			writeError(w, http.StatusBadRequest, "bad_decision", err.Error())
			return
		}
		s.storeError(w, err)
		return
	}
	st, _ = s.store.Study(r.Context(), st.ID)
	writeJSON(w, http.StatusOK, st)
}

// revoke withdraws the caller's association's standing approval of a study.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request, u User) {
	st, ok := s.load(w, r, u)
	if !ok {
		return
	}
	if err := s.c.Revoke(r.Context(), st.ID, u.Association()); err != nil {
		if errors.Is(err, coordinator.ErrNotStanding) || errors.Is(err, study.ErrInvalid) {
			writeError(w, http.StatusBadRequest, "bad_revocation", err.Error())
			return
		}
		s.storeError(w, err)
		return
	}
	st, _ = s.store.Study(r.Context(), st.ID)
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) results(w http.ResponseWriter, r *http.Request, u User) {
	st, ok := s.load(w, r, u)
	if !ok {
		return
	}
	res, err := s.store.Results(r.Context(), st.ID)
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := []ResultInfo{}
	if st.State == study.Released {
		for _, x := range res {
			out = append(out, ResultInfo{QueryIndex: x.QueryIndex, QueryID: x.QueryID, Checks: x.Checks, ReleasedAt: x.ReleasedAt})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) result(w http.ResponseWriter, r *http.Request, u User) {
	st, ok := s.load(w, r, u)
	if !ok {
		return
	}
	if st.State != study.Released {
		writeError(w, http.StatusConflict, "not_released", fmt.Sprintf("study %s is %s: results are served once released", st.ID, st.State))
		return
	}
	res, err := s.store.Results(r.Context(), st.ID)
	if err != nil {
		s.storeError(w, err)
		return
	}
	q := r.PathValue("query")
	idx, idxErr := strconv.Atoi(q)
	for _, x := range res {
		if x.QueryID == q || idxErr == nil && x.QueryIndex == idx {
			s.render(w, r, st, x)
			return
		}
	}
	writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("study %s has no result for %q", st.ID, q))
}
