package sqlsrv

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"

	"github.com/apache/arrow/go/v17/arrow/flight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/samsyn/samsyn/node/importer"
)

// ActionImport is the Flight action through which `samsyn node import` hands an import to a
// running node: DuckDB has one writer, and while the node serves, it is that writer.
const ActionImport = "samsyn.import"

// ImportRequest is the body of ActionImport: files on this machine, read by the node.
type ImportRequest struct {
	Table string   `json:"table"`
	Files []string `json:"files"`
}

// ImportReply is the answer: the result, or every problem found.
type ImportReply struct {
	Result   *importer.Result   `json:"result,omitempty"`
	Problems []importer.Problem `json:"problems,omitempty"`
	Total    int                `json:"total,omitempty"`
	Error    string             `json:"error,omitempty"`
}

// Importer runs an import on the node's store with the node's own association and secret.
type Importer func(ctx context.Context, table string, files []string) (*importer.Result, error)

// ActionPreview is the Flight action through which `samsyn node preview` asks a serving node
// to run a preview on its own store (the store has one process).
const ActionPreview = "samsyn.preview"

// PreviewRequest is the body of ActionPreview: a catalog query and its parameters.
type PreviewRequest struct {
	Query  string            `json:"query"`
	Params map[string]string `json:"params"`
}

// PreviewReply is the answer: the preview as text, or why there is none.
type PreviewReply struct {
	Text  string `json:"text,omitempty"`
	Error string `json:"error,omitempty"`
}

// Previewer renders the preview of a catalog query on the node's store, for its analysts.
type Previewer func(ctx context.Context, query string, params map[string]string) (string, error)

// withImport adds the local actions (ActionImport, ActionPreview) to a Flight SQL server.
type withImport struct {
	flight.FlightServer
	imp  Importer
	prev Previewer
}

func (w withImport) DoAction(a *flight.Action, stream flight.FlightService_DoActionServer) error {
	if a.GetType() == ActionPreview {
		return w.preview(a, stream)
	}
	if a.GetType() != ActionImport {
		return w.FlightServer.DoAction(a, stream)
	}
	if w.imp == nil {
		return status.Error(codes.Unimplemented, "this node does not take imports through its SQL service")
	}
	var req ImportRequest
	if err := json.Unmarshal(a.GetBody(), &req); err != nil {
		return status.Error(codes.InvalidArgument, "import: expected {table, files}")
	}
	for _, f := range req.Files {
		if !filepath.IsAbs(f) {
			return status.Errorf(codes.InvalidArgument, "import: %s: expected an absolute path on the node's machine", f)
		}
	}
	var reply ImportReply
	res, err := w.imp(stream.Context(), req.Table, req.Files)
	var ve *importer.ValidationError
	switch {
	case errors.As(err, &ve):
		reply.Problems, reply.Total = ve.Problems, ve.Total
	case err != nil:
		reply.Error = err.Error()
	default:
		reply.Result = res
	}
	body, err := json.Marshal(reply)
	if err != nil {
		return err
	}
	return stream.Send(&flight.Result{Body: body})
}

func (w withImport) preview(a *flight.Action, stream flight.FlightService_DoActionServer) error {
	if w.prev == nil {
		return status.Error(codes.Unimplemented, "this node does not run previews through its SQL service")
	}
	var req PreviewRequest
	if err := json.Unmarshal(a.GetBody(), &req); err != nil || req.Query == "" {
		return status.Error(codes.InvalidArgument, "preview: expected {query, params}")
	}
	var reply PreviewReply
	text, err := w.prev(stream.Context(), req.Query, req.Params)
	if err != nil {
		reply.Error = err.Error()
	} else {
		reply.Text = text
	}
	body, err := json.Marshal(reply)
	if err != nil {
		return err
	}
	return stream.Send(&flight.Result{Body: body})
}
