// Command misbehave is a test plugin that does what an analysis must not, chosen by the
// request's option "mode": run forever, take too much memory, report its environment, or
// answer outside the declared shape.
package main

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/apache/arrow/go/v17/arrow/array"

	"github.com/samsyn/samsyn/analysis"
)

type misbehave struct{}

func (misbehave) Run(ctx context.Context, req *analysis.Request, rows array.RecordReader) (*analysis.Result, error) {
	switch req.Options["mode"] {
	case "sleep":
		time.Sleep(time.Hour)
	case "alloc":
		var keep [][]byte
		for i := 0; i < 64; i++ { // up to 8 GiB, touched
			b := make([]byte, 128<<20)
			for j := range b {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		_ = keep
	case "env":
		// One cell per environment variable the node passed on that is not go-plugin's own.
		var out analysis.Result
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "PLUGIN_") && !strings.HasPrefix(kv, analysis.Handshake.MagicCookieKey+"=") {
				out.Cells = append(out.Cells, analysis.Cell{Labels: []string{kv}, N: 0})
			}
		}
		return &out, nil
	case "shape":
		return &analysis.Result{Cells: []analysis.Cell{{Labels: []string{"not declared"}, N: 1}}}, nil
	}
	return &analysis.Result{}, nil
}

func main() { analysis.Serve(misbehave{}) }
