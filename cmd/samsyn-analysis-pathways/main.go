// Command samsyn-analysis-pathways is the pathways analysis plugin. A Samsyn node starts it; it is not
// meant to be run by hand (go-plugin's handshake refuses that with a message).
package main

import (
	"github.com/samsyn/samsyn/analysis"
	"github.com/samsyn/samsyn/analysis/pathways"
)

func main() { analysis.Serve(pathways.Analysis{}) }
