// Command samsyn-analysis-logit is the logit analysis plugin. A Samsyn node starts it; it is not
// meant to be run by hand (go-plugin's handshake refuses that with a message).
package main

import (
	"github.com/samsyn/samsyn/analysis"
	"github.com/samsyn/samsyn/analysis/logit"
)

func main() { analysis.Serve(logit.Analysis{}) }
