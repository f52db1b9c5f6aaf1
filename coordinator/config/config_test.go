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

func TestDialOutNodes(t *testing.T) {
	c, err := Load("testdata/dial_out.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Nodes[0].Mode() != "listen" || c.Nodes[1].Mode() != "dial-out" || c.TunnelListen != "0.0.0.0:7443" {
		t.Fatalf("%+v", c.Nodes)
	}
}

func TestLoadBadNamesFileLineAndField(t *testing.T) {
	want := map[string]string{
		"public_without_tls.bad.yaml":      `public_without_tls.bad.yaml:2: listen: "0.0.0.0:8080" is not loopback`,
		"duplicate_node.bad.yaml":          "duplicate_node.bad.yaml:9: nodes[1]: association hbs is listed twice",
		"bad_identity.bad.yaml":            `bad_identity.bad.yaml:9: nodes[1]: identity "varna"`,
		"unknown_key.bad.yaml":             "unknown_key.bad.yaml:7: field colour not found",
		"missing_ticket_key.bad.yaml":      "missing_ticket_key.bad.yaml: ticket_key: missing",
		"unknown_association.bad.yaml":     `unknown_association.bad.yaml:9: nodes[1]: association "atlantis"`,
		"dial_out_without_tunnel.bad.yaml": "dial_out_without_tunnel.bad.yaml:9: nodes[1]: dial_out: the coordinator needs tunnel_listen",
		"dial_out_and_address.bad.yaml":    "dial_out_and_address.bad.yaml:10: nodes[1]: address and dial_out",
	}
	for name, w := range want {
		_, err := Load(filepath.Join("testdata", name))
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("%s: got %v, want …%s…", name, err, w)
		}
	}
}
