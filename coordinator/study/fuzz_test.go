package study

import (
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/samsyn/samsyn/queries"
)

// FuzzStudyFile feeds hostile study files to the parser and validator: never a panic, and a
// study they accept has printable text, known queries and parameters bound to their domains.
func FuzzStudyFile(f *testing.F) {
	cat, err := queries.LoadDir("../../queries/catalog")
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("title: Utfall\npurpose: p\nqueries:\n  - id: exits_by_municipality\n    params: {from: 2021-01-01, to: 2021-12-31}\nassociations: all\non_node_failure: partial\n"))
	f.Add([]byte("title: \"a\\0b\"\npurpose: p\nqueries: [{id: exits_by_association, params: {from: 2021-01-01, to: 2021-12-31}}]\n"))
	f.Add([]byte("title: t\npurpose: p\nqueries: [{id: nope}]\nassociations: [hbs, hbs, mars]\n"))
	f.Add([]byte("queries: {"))
	fed := []string{"hbs", "varna", "roslagen"}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := ParseRequest("fuzz.yaml", raw)
		if err != nil {
			return
		}
		s, err := Validate(r, cat, fed, "eva", time.Now())
		if err != nil {
			return
		}
		for _, text := range []string{s.Title, s.Purpose} {
			if strings.ContainsFunc(text, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }) {
				t.Fatalf("a control character was accepted: %q", text)
			}
		}
		for _, q := range s.Queries {
			e, ok := cat.Get(q.ID)
			if !ok || e.Hash() != q.Hash {
				t.Fatalf("query %s is not the catalog's", q.ID)
			}
			if _, err := e.Bind(q.Params); err != nil {
				t.Fatalf("accepted parameters do not bind: %v", err)
			}
		}
	})
}
