package federation

import (
	"bytes"
	_ "embed"
	"fmt"

	"gopkg.in/yaml.v3"
)

//go:embed federation.yaml
var reference []byte

// Federation is the shape of a federation: its coordinator and nodes with their addresses.
type Federation struct {
	Coordinator struct {
		ID      string `yaml:"id"`
		HTTP    string `yaml:"http"`
		Metrics string `yaml:"metrics"` // /metrics, loopback only
		Tunnel  string `yaml:"tunnel"`  // where nodes that dial out connect
	} `yaml:"coordinator"`
	Nodes []Node `yaml:"nodes"`
}

// Node is one association's node.
type Node struct {
	Association string `yaml:"association"`
	Flight      string `yaml:"flight"`
	Health      string `yaml:"health"`
	SQL         string `yaml:"sql"` // the analysts' local Flight SQL service
	// Planned is the association's planned number of participants over the project period.
	Planned int `yaml:"planned"`
}

// Reference returns the reference federation.
func Reference() (*Federation, error) {
	dec := yaml.NewDecoder(bytes.NewReader(reference))
	dec.KnownFields(true)
	var f Federation
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("deploy/federation/federation.yaml: %w", err)
	}
	return &f, nil
}
