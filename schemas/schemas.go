package schemas

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Version is the schema version this binary speaks.
const Version = 1

//go:embed v1/tables.yaml v1/codes/*.yaml
var files embed.FS

// Text is a bilingual label.
type Text struct {
	SV string `yaml:"sv" json:"sv"`
	EN string `yaml:"en" json:"en"`
}

// In returns the label in lang ("sv" or "en"); Swedish is the default.
func (t Text) In(lang string) string {
	if lang == "en" && t.EN != "" {
		return t.EN
	}
	return t.SV
}

// Schema is one version of the canonical model.
type Schema struct {
	Version   int
	Tables    []*Table
	CodeLists map[string]*CodeList
}

var v1 = sync.OnceValues(func() (*Schema, error) { return load(files, "v1") })

// V1 returns the embedded version-1 model. The embedded files are checked by tests, so an
// error here means a broken build; it panics rather than let a node run on half a schema.
func V1() *Schema {
	s, err := v1()
	if err != nil {
		panic(err)
	}
	return s
}

// Table returns the named table.
func (s *Schema) Table(name string) (*Table, bool) {
	for _, t := range s.Tables {
		if t.Name == name {
			return t, true
		}
	}
	return nil, false
}

// TableNames lists the tables in their defined order.
func (s *Schema) TableNames() []string {
	names := make([]string, len(s.Tables))
	for i, t := range s.Tables {
		names[i] = t.Name
	}
	return names
}

// CodeList returns the named code list or banding.
func (s *Schema) CodeList(name string) (*CodeList, bool) {
	c, ok := s.CodeLists[name]
	return c, ok
}

type tablesFile struct {
	Version int      `yaml:"version"`
	Tables  []*Table `yaml:"tables"`
}

func load(fsys fs.FS, dir string) (*Schema, error) {
	raw, err := fs.ReadFile(fsys, path.Join(dir, "tables.yaml"))
	if err != nil {
		return nil, err
	}
	var tf tablesFile
	if err := decodeStrict(raw, &tf); err != nil {
		return nil, fmt.Errorf("%s/tables.yaml: %w", dir, err)
	}
	s := &Schema{Version: tf.Version, Tables: tf.Tables, CodeLists: map[string]*CodeList{}}
	entries, err := fs.Glob(fsys, path.Join(dir, "codes", "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(entries)
	for _, p := range entries {
		raw, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		var cl CodeList
		if err := decodeStrict(raw, &cl); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if want := strings.TrimSuffix(path.Base(p), ".yaml"); cl.Name != want {
			return nil, fmt.Errorf("%s: name %q does not match the file name", p, cl.Name)
		}
		if err := cl.index(); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		s.CodeLists[cl.Name] = &cl
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return s, nil
}

func decodeStrict(raw []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func (s *Schema) check() error {
	if s.Version != Version {
		return fmt.Errorf("tables.yaml declares version %d, this package is version %d", s.Version, Version)
	}
	for _, t := range s.Tables {
		if err := t.check(s); err != nil {
			return fmt.Errorf("table %s: %w", t.Name, err)
		}
	}
	return nil
}

// CodeList is a closed list of codes with bilingual labels. A banding is a code list whose
// codes carry a numeric range (Min, Max) over the quantity named by Banding.
type CodeList struct {
	Name    string `yaml:"name"`
	Title   Text   `yaml:"title"`
	Banding string `yaml:"banding,omitempty"`
	Codes   []Code `yaml:"codes"`

	byCode map[string]int
}

// Code is one entry of a code list.
type Code struct {
	Code  string            `yaml:"code"`
	SV    string            `yaml:"sv"`
	EN    string            `yaml:"en"`
	Min   *int              `yaml:"min,omitempty"`
	Max   *int              `yaml:"max,omitempty"`
	Attrs map[string]string `yaml:"attrs,omitempty"`
}

// Label is the code's bilingual label.
func (c Code) Label() Text { return Text{SV: c.SV, EN: c.EN} }

func (c *CodeList) index() error {
	if len(c.Codes) == 0 {
		return fmt.Errorf("code list %s has no codes", c.Name)
	}
	c.byCode = make(map[string]int, len(c.Codes))
	for i, code := range c.Codes {
		if code.Code == "" || code.SV == "" || code.EN == "" {
			return fmt.Errorf("code list %s entry %d: code, sv and en are required", c.Name, i+1)
		}
		if _, dup := c.byCode[code.Code]; dup {
			return fmt.Errorf("code list %s: code %q appears twice", c.Name, code.Code)
		}
		c.byCode[code.Code] = i
		if c.Banding != "" && code.Min == nil {
			return fmt.Errorf("banding %s: code %q has no min", c.Name, code.Code)
		}
	}
	return nil
}

// Lookup returns the entry for code.
func (c *CodeList) Lookup(code string) (Code, bool) {
	i, ok := c.byCode[code]
	if !ok {
		return Code{}, false
	}
	return c.Codes[i], true
}

// Contains reports whether code is in the list.
func (c *CodeList) Contains(code string) bool {
	_, ok := c.byCode[code]
	return ok
}

// Values lists the codes in their defined order.
func (c *CodeList) Values() []string {
	out := make([]string, len(c.Codes))
	for i, code := range c.Codes {
		out[i] = code.Code
	}
	return out
}

// Where lists the codes whose attribute key equals value, in order.
func (c *CodeList) Where(key, value string) []string {
	var out []string
	for _, code := range c.Codes {
		if code.Attrs[key] == value {
			out = append(out, code.Code)
		}
	}
	return out
}

// Band returns the code whose range holds v.
func (c *CodeList) Band(v int) (string, bool) {
	for _, code := range c.Codes {
		if code.Min != nil && v >= *code.Min && (code.Max == nil || v <= *code.Max) {
			return code.Code, true
		}
	}
	return "", false
}

// BandSQL returns a SQL CASE expression that maps the integer expression expr to this
// banding's codes (NULL outside every band). Codes and bounds come from the embedded list,
// never from user input.
func (c *CodeList) BandSQL(expr string) string {
	var b strings.Builder
	b.WriteString("CASE")
	for _, code := range c.Codes {
		if code.Min == nil {
			continue
		}
		fmt.Fprintf(&b, " WHEN (%s) >= %d", expr, *code.Min)
		if code.Max != nil {
			fmt.Fprintf(&b, " AND (%s) <= %d", expr, *code.Max)
		}
		fmt.Fprintf(&b, " THEN %s", quoteLiteral(code.Code))
	}
	b.WriteString(" END")
	return b.String()
}

// Describe formats up to max codes for an error message: "K, M" or "0114, 0115, … (26 codes)".
func (c *CodeList) Describe(max int) string {
	vals := c.Values()
	if len(vals) <= max {
		return strings.Join(vals, ", ")
	}
	return strings.Join(vals[:max], ", ") + ", … (" + strconv.Itoa(len(vals)) + " codes)"
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// Languages are the label languages every code list carries.
var Languages = []string{"sv", "en"}

// IsLanguage reports whether lang is a supported label language.
func IsLanguage(lang string) bool { return slices.Contains(Languages, lang) }
