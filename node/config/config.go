package config

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/schemas"
)

// FileName is the conventional name of a node's configuration file.
const FileName = "node.yaml"

// Config is a node's configuration. Relative paths are relative to the file's folder.
type Config struct {
	// Association is the id of the coordination association this node belongs to.
	Association string `yaml:"association"`
	// Store is the DuckDB file holding the association's participants.
	Store string `yaml:"store"`
	// SecretFile holds the node secret (64 hex characters, mode 0600). The secret keys the
	// participant-key hash and the cell-key method's record keys; it never leaves the node.
	SecretFile string `yaml:"secret_file"`
	// AuditLog is the node's append-only audit log.
	AuditLog string `yaml:"audit_log"`

	// The rest is needed only to serve (samsyn node serve).

	// Listen is the Flight address (mutual TLS) the coordinator connects to. A node that
	// dials out (coordinator.dial) may leave it empty: it then opens no inbound port.
	Listen string `yaml:"listen"`
	// HealthListen serves /healthz, /readyz and /metrics over plain HTTP; loopback only.
	HealthListen string `yaml:"health_listen"`
	TLS          TLS    `yaml:"tls"`
	// Coordinator is who may ask this node for releases.
	Coordinator Coordinator `yaml:"coordinator"`
	Catalog     Catalog     `yaml:"catalog"`
	// AssociationKey is the public key of this association's data owner, who approves studies.
	AssociationKey string `yaml:"association_key"`
	Query          Query  `yaml:"query"`
	// SQL is the analysts' local Flight SQL service (off unless listen is set).
	SQL SQL `yaml:"sql"`
	// AllowedQueries are the catalog query ids this node answers; ["*"] answers every signed
	// entry. Deny by default: without the list the node refuses every request.
	AllowedQueries []string `yaml:"allowed_queries"`
	// Policy makes disclosure control stricter than the federation's defaults (never looser).
	Policy *disclosure.Policy `yaml:"policy"`
	// Aggregation pins the federation's aggregation keys and bounds the cohorts this node
	// contributes to. Without it the node answers only for itself (cohorts of one).
	Aggregation Aggregation `yaml:"aggregation"`
	// Plugins runs the catalog's analyses: each binary must match the hash the catalog
	// authority signed.
	Plugins Plugins `yaml:"plugins"`

	dir   string
	path  string
	lines map[string]int
}

// TLS names the node's certificate files.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// SQL configures the analysts' Flight SQL service.
type SQL struct {
	// Listen is a loopback address (127.0.0.1:PORT) or unix:/path.
	Listen string `yaml:"listen"`
	// TokenFile holds the analysts' bearer token (mode 0600).
	TokenFile string `yaml:"token_file"`
}

// ReadSQLToken reads the analysts' token, refusing a file others can read.
func (c *Config) ReadSQLToken() (string, error) {
	path := c.Abs(c.SQL.TokenFile)
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("read sql token: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("sql token %s has mode %04o: expected 0600 (run: chmod 600 %s)", path, perm, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(raw))
	if len(tok) < 16 {
		return "", fmt.Errorf("sql token %s: expected at least 16 characters", path)
	}
	return tok, nil
}

// Aggregation configures the node's part in pooled releases (secure aggregation).
type Aggregation struct {
	// Peers pins every association's X25519 aggregation public key (hex), this node's own
	// included: `samsyn node aggregation-key` prints it. The federation is these associations.
	Peers map[string]string `yaml:"peers"`
	// MinCohort is the smallest cohort of associations this node contributes to, unless the
	// cohort is one of Groups. Default 3.
	MinCohort int `yaml:"min_cohort"`
	// Groups names further cohorts this node joins whatever their size, e.g. Södertörn.
	Groups map[string][]string `yaml:"groups"`
	// MaxCohorts bounds how many distinct cohorts this node contributes to for the same query
	// and parameters, so that nobody can difference many overlapping cohorts. Default 2.
	MaxCohorts int `yaml:"max_cohorts"`
}

// Federation lists the associations with a pinned aggregation key, sorted.
func (a Aggregation) Federation() []string {
	out := make([]string, 0, len(a.Peers))
	for k := range a.Peers {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ErrCohort refuses a cohort outside the node's policy.
var ErrCohort = errors.New("cohort outside this node's policy")

// CohortAllowed reports whether this node of association contributes to cohort (sorted).
func (a Aggregation) CohortAllowed(association string, cohort []string) error {
	if len(a.Peers) == 0 {
		return fmt.Errorf("%w: this node has no pinned aggregation keys (aggregation.peers)", ErrCohort)
	}
	if !slices.Contains(cohort, association) {
		return fmt.Errorf("%w: %s is not in it", ErrCohort, association)
	}
	for _, c := range cohort {
		if _, ok := a.Peers[c]; !ok {
			return fmt.Errorf("%w: %q has no pinned aggregation key", ErrCohort, c)
		}
	}
	for _, g := range a.Groups {
		if slices.Equal(sortedCopy(g), cohort) {
			return nil
		}
	}
	if len(cohort) < a.MinCohort {
		return fmt.Errorf("%w: %d associations, fewer than min_cohort %d and not a named group", ErrCohort, len(cohort), a.MinCohort)
	}
	return nil
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// Coordinator identifies the coordinator.
type Coordinator struct {
	// Identity is the samsyn:// identity its client certificate must carry.
	Identity string `yaml:"identity"`
	// TicketKeys are the public keys whose signatures on tickets this node accepts.
	TicketKeys []string `yaml:"ticket_keys"`
	// Dial, when set (host:port of the coordinator's tunnel_listen), makes the node dial out:
	// it keeps a mutual-TLS tunnel open to the coordinator, which sends its tickets through it.
	Dial string `yaml:"dial"`
}

// Catalog locates the signed catalog.
type Catalog struct {
	Dir          string `yaml:"dir"`
	AuthorityKey string `yaml:"authority_key"`
}

// Query bounds every catalog query the node runs.
type Query struct {
	Timeout       time.Duration `yaml:"timeout"`
	MemoryLimit   string        `yaml:"memory_limit"`
	MaxConcurrent int           `yaml:"max_concurrent"`
	// Cache keeps this many recent protected tables: a repeated query on unchanged data is
	// answered without running it (the release is identical by construction). 0 disables it.
	Cache int `yaml:"cache"`
	// Threads is DuckDB's worker threads for the node's queries; 0 (the default) uses every
	// core. Where nodes share a machine, give each its share: the demo runs eight on one.
	Threads int `yaml:"threads"`
}

// Plugins configures the analysis plugins.
type Plugins struct {
	// Dir holds the plugin binaries (samsyn-analysis-*); the folder of the samsyn binary
	// when empty.
	Dir     string        `yaml:"dir"`
	Timeout time.Duration `yaml:"timeout"` // per call; 60 s when zero
	// MemoryLimitMB bounds each plugin process's address space; 2048 when zero.
	MemoryLimitMB int `yaml:"memory_limit_mb"`
}

// PluginDir is the resolved plugin folder.
func (c *Config) PluginDir() string {
	if c.Plugins.Dir != "" {
		return c.abs(c.Plugins.Dir)
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Dir(exe)
}

// Allows reports whether the node answers query id.
func (c *Config) Allows(id string) bool {
	for _, a := range c.AllowedQueries {
		if a == "*" || a == id {
			return true
		}
	}
	return false
}

// Abs resolves a path from the file relative to the file's folder.
func (c *Config) Abs(p string) string {
	if p == "" {
		return ""
	}
	return c.abs(p)
}

// Path is the file the configuration was loaded from.
func (c *Config) Path() string { return c.path }

// StorePath is the absolute path of the store.
func (c *Config) StorePath() string { return c.abs(c.Store) }

// SecretPath is the absolute path of the secret file.
func (c *Config) SecretPath() string { return c.abs(c.SecretFile) }

func (c *Config) abs(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// Error is a configuration problem with its place in the file.
type Error struct {
	File  string
	Line  int    // 0 when the problem has no single line
	Field string // field path, e.g. "store"
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Load reads, strictly decodes and validates a node configuration.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read node config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c := &Config{Store: "store.duckdb", SecretFile: "secret", AuditLog: "audit.log", HealthListen: "127.0.0.1:0",
		Query:       Query{Timeout: 30 * time.Second, MemoryLimit: "512MB", MaxConcurrent: 4, Cache: 256},
		Aggregation: Aggregation{MinCohort: 3, MaxCohorts: 2}, dir: filepath.Dir(abs), path: path}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, yamlError(path, err)
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: path, Msg: "file is empty: expected at least association"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, yamlError(path, err)
	}
	c.lines = lines(&doc)
	if err := c.Validate(c.lines); err != nil {
		return nil, err
	}
	return c, nil
}

// yamlError turns yaml.v3's messages ("line 3: field x not found in type config.Config")
// into file:line errors. Only the first problem is reported.
func yamlError(path string, err error) error {
	msgs := []string{err.Error()}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msgs = te.Errors
	}
	m := yamlLine.FindStringSubmatch(msgs[0])
	if m == nil {
		return &Error{File: path, Msg: msgs[0]}
	}
	n, _ := strconv.Atoi(m[1])
	msg := strings.Replace(m[2], " in type config.Config", "", 1)
	return &Error{File: path, Line: n, Msg: msg}
}

// lines maps top-level keys to their line numbers for validation errors.
func lines(doc *yaml.Node) map[string]int {
	out := map[string]int{}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return out
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		out[m.Content[i].Value] = m.Content[i].Line
	}
	return out
}

// Validate checks the values; lines gives the line of each key (may be nil).
func (c *Config) Validate(lines map[string]int) error {
	fail := func(field, msg string) error {
		return &Error{File: c.path, Line: lines[field], Field: field, Msg: msg}
	}
	assoc, _ := schemas.V1().CodeList("association")
	switch {
	case c.Association == "":
		return fail("association", "missing: expected one of "+strings.Join(assoc.Values(), ", "))
	case !assoc.Contains(c.Association):
		return fail("association", fmt.Sprintf("unknown association %q: expected one of %s", c.Association, strings.Join(assoc.Values(), ", ")))
	case c.Store == "":
		return fail("store", "empty: expected the path of the DuckDB file")
	case c.SecretFile == "":
		return fail("secret_file", "empty: expected the path of the node secret")
	case c.Query.Timeout <= 0 || c.Query.Timeout > 10*time.Minute:
		return fail("query", fmt.Sprintf("timeout %s: expected more than 0 and at most 10m", c.Query.Timeout))
	case c.Query.Cache < 0 || c.Query.Cache > 100_000:
		return fail("query", fmt.Sprintf("cache %d: expected 0 to 100000", c.Query.Cache))
	case c.Query.MaxConcurrent < 1 || c.Query.MaxConcurrent > 64:
		return fail("query", fmt.Sprintf("max_concurrent %d: expected 1 to 64", c.Query.MaxConcurrent))
	case c.Query.Threads < 0 || c.Query.Threads > 256:
		return fail("query", fmt.Sprintf("threads %d: expected 0 (every core) to 256", c.Query.Threads))
	}
	if c.Policy != nil {
		if err := c.Policy.Check(); err != nil {
			return fail("policy", err.Error())
		}
	}
	switch {
	case c.Plugins.Timeout < 0 || c.Plugins.Timeout > time.Hour:
		return fail("plugins", fmt.Sprintf("timeout %s: expected 0 (60 s) to 1h", c.Plugins.Timeout))
	case c.Plugins.MemoryLimitMB < 0 || (c.Plugins.MemoryLimitMB > 0 && c.Plugins.MemoryLimitMB < 256):
		return fail("plugins", fmt.Sprintf("memory_limit_mb %d: expected 0 (2048) or at least 256", c.Plugins.MemoryLimitMB))
	}
	ag := c.Aggregation
	switch {
	case ag.MinCohort < 2:
		return fail("aggregation", fmt.Sprintf("min_cohort %d: expected 2 or more", ag.MinCohort))
	case ag.MaxCohorts < 1 || ag.MaxCohorts > 16:
		return fail("aggregation", fmt.Sprintf("max_cohorts %d: expected 1 to 16", ag.MaxCohorts))
	case len(ag.Peers) > 0 && ag.Peers[c.Association] == "":
		return fail("aggregation", fmt.Sprintf("peers: no key for this node's own association %s", c.Association))
	}
	for _, id := range ag.Federation() {
		if !assoc.Contains(id) {
			return fail("aggregation", fmt.Sprintf("peers: unknown association %q", id))
		}
		if raw, err := hex.DecodeString(ag.Peers[id]); err != nil || len(raw) != 32 {
			return fail("aggregation", fmt.Sprintf("peers: %s: expected 64 hex characters (an X25519 public key)", id))
		}
	}
	for name, g := range ag.Groups {
		if len(sortedCopy(g)) < 2 || !slices.Contains(g, c.Association) {
			return fail("aggregation", fmt.Sprintf("groups: %s: expected at least two associations, this node's among them", name))
		}
		for _, id := range g {
			if _, ok := ag.Peers[id]; !ok {
				return fail("aggregation", fmt.Sprintf("groups: %s: %q has no pinned key in peers", name, id))
			}
		}
	}
	return nil
}

// ValidateServe checks what serving needs on top of Validate.
func (c *Config) ValidateServe() error {
	fail := func(field, msg string) error {
		top := field
		if i := strings.IndexByte(top, '.'); i >= 0 {
			top = top[:i]
		}
		return &Error{File: c.path, Line: c.lines[top], Field: field, Msg: msg}
	}
	required := []struct{ field, value, what string }{
		{"tls.ca", c.TLS.CA, "the federation CA certificate"},
		{"tls.cert", c.TLS.Cert, "this node's certificate"},
		{"tls.key", c.TLS.Key, "this node's private key"},
		{"coordinator.identity", c.Coordinator.Identity, "the coordinator's identity, e.g. samsyn://coordinator/region"},
		{"catalog.dir", c.Catalog.Dir, "the folder of the signed catalog"},
		{"catalog.authority_key", c.Catalog.AuthorityKey, "the catalog authority's public key"},
		{"association_key", c.AssociationKey, "the public key of this association's data owner"},
	}
	if c.Listen == "" && c.Coordinator.Dial == "" {
		return fail("listen", "missing: expected the Flight address, e.g. 0.0.0.0:7001, or coordinator.dial (host:port) for a node that dials out")
	}
	for _, r := range required {
		if strings.TrimSpace(r.value) == "" {
			return fail(r.field, "missing: expected "+r.what)
		}
	}
	if len(c.Coordinator.TicketKeys) == 0 {
		return fail("coordinator.ticket_keys", "missing: expected the coordinator's ticket-signing public key(s)")
	}
	if !strings.HasPrefix(c.Coordinator.Identity, "samsyn://coordinator/") {
		return fail("coordinator.identity", fmt.Sprintf("%q: expected samsyn://coordinator/<id>", c.Coordinator.Identity))
	}
	host, _, err := net.SplitHostPort(c.HealthListen)
	if err != nil {
		return fail("health_listen", fmt.Sprintf("%q: expected host:port", c.HealthListen))
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fail("health_listen", fmt.Sprintf("%q: plain HTTP is served on loopback only (use 127.0.0.1:PORT and scrape through a local agent)", c.HealthListen))
	}
	if _, _, err := net.SplitHostPort(c.Listen); c.Listen != "" && err != nil {
		return fail("listen", fmt.Sprintf("%q: expected host:port", c.Listen))
	}
	if _, _, err := net.SplitHostPort(c.Coordinator.Dial); c.Coordinator.Dial != "" && err != nil {
		return fail("coordinator.dial", fmt.Sprintf("%q: expected host:port of the coordinator's tunnel_listen", c.Coordinator.Dial))
	}
	return nil
}

// EffectivePolicy is the federation's defaults, made stricter by the file's policy.
func (c *Config) EffectivePolicy() disclosure.Policy {
	if c.Policy == nil {
		return disclosure.Defaults()
	}
	return *c.Policy
}

// SecretLen is the length of the node secret in bytes.
const SecretLen = 32

// ReadSecret reads the node secret, refusing a file that group or others can access.
func (c *Config) ReadSecret() ([]byte, error) {
	return ReadSecret(c.SecretPath())
}

// ReadSecret reads a node secret file: 64 hex characters, mode 0600 or stricter.
func ReadSecret(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read node secret: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("node secret %s has mode %04o: expected 0600 (run: chmod 600 %s)", path, perm, path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read node secret: %w", err)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(secret) != SecretLen {
		return nil, fmt.Errorf("node secret %s: expected %d hex characters", path, 2*SecretLen)
	}
	return secret, nil
}

// Scaffold creates a new node in dir: node.yaml and a fresh random secret (0600). It refuses
// an unknown association, and a folder that already holds a node.yaml or a secret. The
// store itself is created by the caller (store.Open) so that this package stays free of DuckDB.
func Scaffold(dir, association string) (*Config, error) {
	assoc, _ := schemas.V1().CodeList("association")
	if !assoc.Contains(association) {
		return nil, fmt.Errorf("unknown association %q: expected one of %s", association, strings.Join(assoc.Values(), ", "))
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create node folder: %w", err)
	}
	cfgPath := filepath.Join(dir, FileName)
	secretPath := filepath.Join(dir, "secret")
	for _, p := range []string{cfgPath, secretPath, filepath.Join(dir, "sql-token")} {
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("%s already exists: refusing to overwrite an existing node", p)
		}
	}
	secret := make([]byte, SecretLen+24)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generate node secret: %w", err)
	}
	if err := os.WriteFile(secretPath, []byte(hex.EncodeToString(secret[:SecretLen])+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write node secret: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sql-token"), []byte(hex.EncodeToString(secret[SecretLen:])+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write sql token: %w", err)
	}
	body := fmt.Sprintf(`# Samsyn node for %s. Paths are relative to this file.
association: %s
# The association's participants (DuckDB). Back it up; it holds no personal identity numbers.
store: store.duckdb
# Node secret (mode 0600). It keys participant keys and the cell-key method: keep it, back it
# up separately from the store, and never share it.
secret_file: secret
# The association's analysts query their own data here with SQL (samsyn sql, DBeaver, ADBC),
# on this machine only, with the token in sql-token (mode 0600).
sql: {listen: "127.0.0.1:7401", token_file: sql-token}
`, assoc.Codes[indexOf(assoc.Values(), association)].SV, association)
	if err := os.WriteFile(cfgPath, []byte(body), 0o640); err != nil {
		return nil, fmt.Errorf("write node config: %w", err)
	}
	return Load(cfgPath)
}

func indexOf(list []string, v string) int {
	for i, s := range list {
		if s == v {
			return i
		}
	}
	return -1
}
