package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/samsyn/samsyn/queries/disclosure"
	"github.com/samsyn/samsyn/schemas"
)

// Config is the coordinator's configuration. Relative paths are relative to the file.
type Config struct {
	ID     string `yaml:"id"`
	Listen string `yaml:"listen"` // HTTP API and dashboard
	// MetricsListen serves /metrics over plain HTTP, loopback only (scrape it through a local
	// agent); the API's port never serves metrics.
	MetricsListen string `yaml:"metrics_listen"`
	// TLS serves the API over HTTPS; required unless Listen is a loopback address.
	TLS      *ServerTLS `yaml:"tls"`
	NodesTLS ClientTLS  `yaml:"nodes_tls"` // the coordinator's client certificate towards nodes
	// TunnelListen accepts the tunnels of nodes that dial out (mutual TLS with the nodes_tls
	// certificate); required when a node has dial_out, unused otherwise.
	TunnelListen string `yaml:"tunnel_listen"`
	// TicketKey signs the tickets sent to nodes (ed25519 private key, mode 0600).
	TicketKey string  `yaml:"ticket_key"`
	Catalog   Catalog `yaml:"catalog"`
	Store     string  `yaml:"store"`
	AuditLog  string  `yaml:"audit_log"`
	// TokensFile lists API users: name, role and the SHA-256 of their bearer token.
	TokensFile string `yaml:"tokens_file"`
	FanOut     FanOut `yaml:"fanout"`
	// StandingEvery spaces the checks for due reruns of standing studies (1m when zero).
	StandingEvery time.Duration      `yaml:"standing_every"`
	Nodes         []Node             `yaml:"nodes"`
	Policy        *disclosure.Policy `yaml:"policy"`

	dir   string
	path  string
	lines map[string]int
}

// ServerTLS names the API's certificate.
type ServerTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// ClientTLS names the files of the coordinator's mutual-TLS client identity.
type ClientTLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Catalog locates the signed catalog.
type Catalog struct {
	Dir          string `yaml:"dir"`
	AuthorityKey string `yaml:"authority_key"`
}

// FanOut tunes the requests to nodes.
type FanOut struct {
	NodeTimeout time.Duration `yaml:"node_timeout"`
	Retries     int           `yaml:"retries"`
	Backoff     time.Duration `yaml:"backoff"`
}

// Node is one node of the federation.
type Node struct {
	Association string `yaml:"association"`
	Address     string `yaml:"address"`
	// DialOut: the node has no inbound port and dials the coordinator's tunnel_listen
	// instead; then it has no address.
	DialOut     bool   `yaml:"dial_out"`
	Identity    string `yaml:"identity"`     // the samsyn:// identity its certificate must carry
	ApprovalKey string `yaml:"approval_key"` // the association data owner's public key
	// PlannedParticipants is the association's planned number of participants over the
	// project period; the dashboard shows progress against it (0: no plan given).
	PlannedParticipants int `yaml:"planned_participants"`
	line                int
}

// Mode is "dial-out" for a node that dials the coordinator, "listen" for one it dials.
func (n Node) Mode() string {
	if n.DialOut {
		return "dial-out"
	}
	return "listen"
}

// Plans lists each association's planned number of participants (those with a plan).
func (c *Config) Plans() map[string]int {
	out := map[string]int{}
	for _, n := range c.Nodes {
		if n.PlannedParticipants > 0 {
			out[n.Association] = n.PlannedParticipants
		}
	}
	return out
}

// Error is a configuration problem with its place.
type Error struct {
	File, Field, Msg string
	Line             int
}

func (e *Error) Error() string {
	place := e.File
	if e.Line > 0 {
		place += ":" + strconv.Itoa(e.Line)
	}
	if e.Field != "" {
		return place + ": " + e.Field + ": " + e.Msg
	}
	return place + ": " + e.Msg
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Load reads, strictly decodes and validates coordinator.yaml.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read coordinator config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c := &Config{ID: "coordinator", Store: "coordinator.sqlite", AuditLog: "audit.log", MetricsListen: "127.0.0.1:9480",
		FanOut: FanOut{NodeTimeout: 10 * time.Second, Retries: 2, Backoff: 200 * time.Millisecond},
		dir:    filepath.Dir(abs), path: path, lines: map[string]int{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, yamlErr(path, err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, &Error{File: path, Msg: "expected a mapping of settings"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, yamlErr(path, err)
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		c.lines[m.Content[i].Value] = m.Content[i].Line
		if m.Content[i].Value == "nodes" && m.Content[i+1].Kind == yaml.SequenceNode {
			for j, n := range m.Content[i+1].Content {
				if j < len(c.Nodes) {
					c.Nodes[j].line = n.Line
				}
			}
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func yamlErr(path string, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &Error{File: path, Line: n, Msg: strings.Replace(m[2], " in type config.", " in ", 1)}
	}
	return &Error{File: path, Msg: msg}
}

// Abs resolves p relative to the file's folder.
func (c *Config) Abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// Path is the file the configuration came from.
func (c *Config) Path() string { return c.path }

func (c *Config) fail(field, msg string) error {
	top := field
	if i := strings.IndexAny(top, ".["); i >= 0 {
		top = top[:i]
	}
	return &Error{File: c.path, Line: c.lines[top], Field: field, Msg: msg}
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) validate() error {
	required := []struct{ field, value, what string }{
		{"listen", c.Listen, "the API address, e.g. 127.0.0.1:8080"},
		{"nodes_tls.ca", c.NodesTLS.CA, "the federation CA certificate"},
		{"nodes_tls.cert", c.NodesTLS.Cert, "the coordinator's client certificate"},
		{"nodes_tls.key", c.NodesTLS.Key, "the coordinator's client key"},
		{"ticket_key", c.TicketKey, "the ticket-signing private key"},
		{"catalog.dir", c.Catalog.Dir, "the folder of the signed catalog"},
		{"catalog.authority_key", c.Catalog.AuthorityKey, "the catalog authority's public key"},
		{"tokens_file", c.TokensFile, "the file of API users and token hashes"},
	}
	for _, r := range required {
		if strings.TrimSpace(r.value) == "" {
			return c.fail(r.field, "missing: expected "+r.what)
		}
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c.fail("listen", fmt.Sprintf("%q: expected host:port", c.Listen))
	}
	if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil || !loopback(c.MetricsListen) {
		return c.fail("metrics_listen", fmt.Sprintf("%q: expected a loopback host:port (metrics are served in plain HTTP: scrape them through a local agent)", c.MetricsListen))
	}
	if !loopback(c.Listen) && (c.TLS == nil || c.TLS.Cert == "" || c.TLS.Key == "") {
		return c.fail("listen", fmt.Sprintf("%q is not loopback: set tls.cert and tls.key to serve the API over HTTPS", c.Listen))
	}
	if c.TunnelListen != "" {
		if _, _, err := net.SplitHostPort(c.TunnelListen); err != nil {
			return c.fail("tunnel_listen", fmt.Sprintf("%q: expected host:port", c.TunnelListen))
		}
	}
	if c.FanOut.NodeTimeout <= 0 || c.FanOut.Retries < 0 || c.FanOut.Retries > 10 {
		return c.fail("fanout", "node_timeout must be positive and retries 0–10")
	}
	if len(c.Nodes) == 0 {
		return c.fail("nodes", "none: expected at least one node")
	}
	assoc, _ := schemas.V1().CodeList("association")
	seen := map[string]bool{}
	for i, n := range c.Nodes {
		field := fmt.Sprintf("nodes[%d]", i)
		fail := func(msg string) error {
			return &Error{File: c.path, Line: n.line, Field: field, Msg: msg}
		}
		switch {
		case !assoc.Contains(n.Association):
			return fail(fmt.Sprintf("association %q: expected one of %s", n.Association, strings.Join(assoc.Values(), ", ")))
		case seen[n.Association]:
			return fail(fmt.Sprintf("association %s is listed twice", n.Association))
		case n.Address == "" && !n.DialOut:
			return fail("address: missing: expected host:port of the node's Flight service, or dial_out: true for a node that dials the coordinator")
		case n.Address != "" && n.DialOut:
			return fail("address and dial_out: a node either listens (address) or dials out (dial_out: true), not both")
		case n.DialOut && c.TunnelListen == "":
			return fail("dial_out: the coordinator needs tunnel_listen (host:port) for nodes that dial out")
		case !strings.HasPrefix(n.Identity, "samsyn://node/"):
			return fail(fmt.Sprintf("identity %q: expected samsyn://node/<id>", n.Identity))
		case n.ApprovalKey == "":
			return fail("approval_key: missing: expected the association data owner's public key")
		case n.PlannedParticipants < 0 || n.PlannedParticipants > 1_000_000:
			return fail(fmt.Sprintf("planned_participants %d: expected 0 (no plan) to 1000000", n.PlannedParticipants))
		}
		seen[n.Association] = true
	}
	if c.Policy != nil {
		if err := c.Policy.Check(); err != nil {
			return c.fail("policy", err.Error())
		}
	}
	return nil
}

// EffectivePolicy is the defaults made stricter by the file's policy.
func (c *Config) EffectivePolicy() disclosure.Policy {
	if c.Policy == nil {
		return disclosure.Defaults()
	}
	return *c.Policy
}

// User is an API user from the tokens file.
type User struct {
	Name   string `yaml:"name"`
	Role   string `yaml:"role"`
	SHA256 string `yaml:"sha256"`
}

var roles = regexp.MustCompile(`^(steering|evaluator|admin|association:[a-z-]+)$`)

// LoadUsers reads the tokens file: a list of users with their token's SHA-256.
func (c *Config) LoadUsers() ([]User, error) {
	path := c.Abs(c.TokensFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read tokens file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var users []User
	if err := dec.Decode(&users); err != nil {
		return nil, yamlErr(path, err)
	}
	assoc, _ := schemas.V1().CodeList("association")
	for i, u := range users {
		switch {
		case u.Name == "":
			return nil, fmt.Errorf("%s: user %d: name missing", path, i+1)
		case !roles.MatchString(u.Role) || strings.HasPrefix(u.Role, "association:") && !assoc.Contains(strings.TrimPrefix(u.Role, "association:")):
			return nil, fmt.Errorf("%s: user %s: role %q: expected steering, evaluator, admin or association:<id>", path, u.Name, u.Role)
		case len(u.SHA256) != 64:
			return nil, fmt.Errorf("%s: user %s: sha256: expected the 64 hex characters of the token's SHA-256", path, u.Name)
		}
	}
	return users, nil
}
