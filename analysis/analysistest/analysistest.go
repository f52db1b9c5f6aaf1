// Package analysistest runs an analysis plugin's implementation over a real gRPC connection
// in process (go-plugin's TestPluginGRPCConn), with the node's checks on its answer: the
// harness every plugin's tests use before the plugin is tried as a real process.
package analysistest

import (
	"context"
	"testing"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/hashicorp/go-plugin"

	"github.com/samsyn/samsyn/analysis"
)

// Run streams recs (of schema sc) to a over gRPC and returns its answer after the node's
// shape check.
func Run(t testing.TB, a analysis.Analysis, req *analysis.Request, sc *arrow.Schema, recs ...arrow.Record) (*analysis.Result, error) {
	t.Helper()
	client, server := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{analysis.PluginName: &analysis.Plugin{Impl: a}})
	// Closing the client would ask the server to stop through go-plugin's controller while
	// this stops it too, and go-plugin's Stop is not safe to race with itself: close the
	// connection only, then stop the server once.
	defer func() {
		client.Conn.Close()
		server.Stop()
	}()
	raw, err := client.Dispense(analysis.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	rdr, err := array.NewRecordReader(sc, recs)
	if err != nil {
		t.Fatal(err)
	}
	defer rdr.Release()
	res, n, err := raw.(*analysis.Client).Run(context.Background(), req, rdr)
	if err != nil {
		return nil, err
	}
	return res, req.Check(res, n)
}
