package queries

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/samsyn/samsyn/schemas"
)

// Entry is one approved query of the catalog.
type Entry struct {
	ID          string           `yaml:"id"`
	Version     int              `yaml:"version"`
	Title       schemas.Text     `yaml:"title"`
	Description schemas.Text     `yaml:"description"`
	View        string           `yaml:"view"`
	Params      map[string]Param `yaml:"params"`
	Dimensions  []Dimension      `yaml:"dimensions"`
	Measures    []Measure        `yaml:"measures"`
	Totals      bool             `yaml:"totals"`
	// Analysis makes the entry an analysis run by a pinned plugin (nil for a table query).
	Analysis *Analysis `yaml:"analysis,omitempty"`

	file  string
	lines map[string]int
}

// Param is a typed parameter with a coarse domain.
type Param struct {
	Type   string `yaml:"type"`   // date, int or code
	Domain string `yaml:"domain"` // quarter_start, quarter_end, year, or codelist:NAME
}

// Dimension is a released dimension, bound to a code list. A plain name binds the view
// column of that name to the code list of the same-named schema column (or code list); From
// names a numeric view column that the node bands with the code list Name.
type Dimension struct {
	Name     string `yaml:"name"`
	CodeList string `yaml:"codelist,omitempty"`
	From     string `yaml:"from,omitempty"`
}

// UnmarshalYAML accepts "municipality" as well as {name: age_band, from: age}.
func (d *Dimension) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		d.Name = n.Value
		return nil
	}
	type plain Dimension
	var p plain
	dec := n.Decode
	if err := dec(&p); err != nil {
		return err
	}
	*d = Dimension(p)
	return nil
}

// Measure is a numeric view column released as a mean or a sum per cell.
type Measure struct {
	Name string `yaml:"name"`
	Agg  string `yaml:"agg"`
}

// File is the file the entry was loaded from.
func (e *Entry) File() string { return e.file }

// Error is a catalog problem with its place.
type Error struct {
	File  string
	Line  int
	Query string
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Query != "" {
		b.WriteString(e.Query + ": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// ParseEntry decodes one catalog file strictly. It does not validate the view.
func ParseEntry(file string, raw []byte) (*Entry, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, yamlErr(file, err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, &Error{File: file, Msg: "expected a mapping with id, version, title, view, params, dimensions, measures"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var e Entry
	if err := dec.Decode(&e); err != nil {
		return nil, yamlErr(file, err)
	}
	e.file = file
	e.lines = map[string]int{}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		e.lines[m.Content[i].Value] = m.Content[i].Line
	}
	return &e, nil
}

func yamlErr(file string, err error) error {
	msgs := []string{err.Error()}
	var te *yaml.TypeError
	if ok := asTypeError(err, &te); ok && len(te.Errors) > 0 {
		msgs = te.Errors
	}
	mm := yamlLine.FindStringSubmatch(msgs[0])
	if mm == nil {
		return &Error{File: file, Msg: msgs[0]}
	}
	var line int
	fmt.Sscan(mm[1], &line)
	return &Error{File: file, Line: line, Msg: strings.Replace(mm[2], " in type queries.", " in ", 1)}
}

func asTypeError(err error, te **yaml.TypeError) bool {
	t, ok := err.(*yaml.TypeError)
	if ok {
		*te = t
	}
	return ok
}

func (e *Entry) fail(field, format string, args ...any) error {
	top := field
	if i := strings.IndexAny(top, ".["); i >= 0 {
		top = top[:i]
	}
	return &Error{File: e.file, Line: e.lines[top], Query: e.ID, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// canonical is the signed form of an entry: fixed field order, sorted params, normalised view.
type canonical struct {
	ID          string         `json:"id"`
	Version     int            `json:"version"`
	Title       schemas.Text   `json:"title"`
	Description schemas.Text   `json:"description"`
	View        string         `json:"view"`
	Params      []canonicalArg `json:"params"`
	Dimensions  []Dimension    `json:"dimensions"`
	Measures    []Measure      `json:"measures"`
	Totals      bool           `json:"totals"`
	Analysis    *Analysis      `json:"analysis,omitempty"`
}

type canonicalArg struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Domain string `json:"domain"`
}

// NormalizeView trims trailing space on every line, unifies line endings and trims the ends.
func NormalizeView(v string) string {
	v = strings.ReplaceAll(v, "\r\n", "\n")
	lines := strings.Split(v, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// Canonical returns the canonical JSON of the entry: what the catalog authority signs.
func (e *Entry) Canonical() []byte {
	c := canonical{ID: e.ID, Version: e.Version, Title: e.Title, Description: e.Description,
		View: NormalizeView(e.View), Dimensions: e.Dimensions, Measures: e.Measures, Totals: e.Totals, Analysis: e.Analysis}
	if c.Dimensions == nil {
		c.Dimensions = []Dimension{}
	}
	if c.Measures == nil {
		c.Measures = []Measure{}
	}
	names := make([]string, 0, len(e.Params))
	for n := range e.Params {
		names = append(names, n)
	}
	sort.Strings(names)
	c.Params = []canonicalArg{}
	for _, n := range names {
		c.Params = append(c.Params, canonicalArg{Name: n, Type: e.Params[n].Type, Domain: e.Params[n].Domain})
	}
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // plain data always marshals
	}
	return b
}

// Hash is the hex SHA-256 of the canonical form.
func (e *Entry) Hash() string {
	sum := sha256.Sum256(e.Canonical())
	return hex.EncodeToString(sum[:])
}

// LoadFile reads and validates one entry.
func LoadFile(path string) (*Entry, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read catalog entry: %w", err)
	}
	e, err := ParseEntry(path, raw)
	if err != nil {
		return nil, err
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}

// Catalog is a set of validated entries by id.
type Catalog struct {
	Dir     string
	Entries map[string]*Entry
}

// IDs lists the entry ids in order.
func (c *Catalog) IDs() []string {
	ids := make([]string, 0, len(c.Entries))
	for id := range c.Entries {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Get returns the entry with id.
func (c *Catalog) Get(id string) (*Entry, bool) {
	e, ok := c.Entries[id]
	return e, ok
}

// LoadDir loads and validates every *.yaml in dir; all problems are reported together.
func LoadDir(dir string) (*Catalog, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no catalog entries (*.yaml)", dir)
	}
	sort.Strings(files)
	c := &Catalog{Dir: dir, Entries: map[string]*Entry{}}
	var errs []string
	for _, f := range files {
		e, err := LoadFile(f)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if prev, dup := c.Entries[e.ID]; dup {
			errs = append(errs, (&Error{File: f, Line: e.lines["id"], Query: e.ID, Field: "id", Msg: "also defined in " + prev.file}).Error())
			continue
		}
		c.Entries[e.ID] = e
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("catalog %s has %d problem(s):\n  %s", dir, len(errs), strings.Join(errs, "\n  "))
	}
	return c, nil
}
