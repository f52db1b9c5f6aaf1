package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadGood(t *testing.T) {
	c, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Nodes) != 2 || c.FanOut.Retries != 2 || !filepath.IsAbs(c.Abs(c.TicketKey)) {
		t.Fatalf("%+v", c)
	}
	users, err := c.LoadUsers()
	if err != nil || len(users) != 2 || users[1].Role != "association:hbs" {
		t.Fatalf("users %+v %v", users, err)
	}
}

func TestLoadBadNamesFileLineAndField(t *testing.T) {
	want := map[string]string{
		"public_without_tls.bad.yaml":  `public_without_tls.bad.yaml:2: listen: "0.0.0.0:8080" is not loopback`,
		"duplicate_node.bad.yaml":      "duplicate_node.bad.yaml:9: nodes[1]: association hbs is listed twice",
		"bad_identity.bad.yaml":        `bad_identity.bad.yaml:9: nodes[1]: identity "varna"`,
		"unknown_key.bad.yaml":         "unknown_key.bad.yaml:7: field colour not found",
		"missing_ticket_key.bad.yaml":  "missing_ticket_key.bad.yaml: ticket_key: missing",
		"unknown_association.bad.yaml": `unknown_association.bad.yaml:9: nodes[1]: association "atlantis"`,
	}
	for name, w := range want {
		_, err := Load(filepath.Join("testdata", name))
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("%s: got %v, want …%s…", name, err, w)
		}
	}
}
