package analysis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Handshake is the handshake every Samsyn analysis plugin answers. The cookie is not a
// secret: it only keeps a plugin binary from being run by mistake as a program of its own.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "SAMSYN_ANALYSIS_PLUGIN",
	MagicCookieValue: "samsyn-node-analysis-v1",
}

// PluginName is the name under which a plugin binary serves its analysis.
const PluginName = "analysis"

// MaxResultBytes bounds a plugin's answer: statistics of a declared shape are small.
const MaxResultBytes = 8 << 20

// The service is one client-streaming call: the request travels in the call's metadata, the
// rows as Arrow Flight data messages, and the answer comes back as one Flight result whose
// body is the JSON Result. Reusing Flight's generated messages spares the project a protobuf
// toolchain and keeps the rows in Arrow's own IPC framing.
const (
	serviceName = "samsyn.analysis.v1.Analysis"
	runMethod   = "/" + serviceName + "/Run"
	requestMD   = "samsyn-analysis-request-bin"
)

type runner interface{ run(grpc.ServerStream) error }

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*runner)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Run",
		ClientStreams: true,
		Handler:       func(srv any, stream grpc.ServerStream) error { return srv.(runner).run(stream) },
	}},
	Metadata: "samsyn/analysis/v1",
}

// Plugin is the go-plugin glue for an Analysis: Impl on the plugin's side, nil on the node's.
type Plugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Analysis
}

var _ plugin.GRPCPlugin = (*Plugin)(nil)

// GRPCServer registers the analysis on the plugin's gRPC server.
func (p *Plugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&serviceDesc, &server{impl: p.Impl})
	return nil
}

// GRPCClient returns the node's *Client for the plugin.
func (p *Plugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Client{conn: c}, nil
}

// Plugins is the plugin set a node and a plugin both declare.
func Plugins(impl Analysis) plugin.PluginSet {
	return plugin.PluginSet{PluginName: &Plugin{Impl: impl}}
}

// Serve runs a as a plugin process; it returns when the node is done with it. Call it from
// the plugin's main.
func Serve(a Analysis) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         Plugins(a),
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}

type server struct{ impl Analysis }

type serverStream struct{ grpc.ServerStream }

func (s serverStream) Recv() (*flight.FlightData, error) {
	fd := new(flight.FlightData)
	if err := s.RecvMsg(fd); err != nil {
		return nil, err
	}
	return fd, nil
}

func (s *server) run(stream grpc.ServerStream) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	raw := md.Get(requestMD)
	if len(raw) != 1 {
		return status.Error(codes.InvalidArgument, "no analysis request")
	}
	var req Request
	if err := json.Unmarshal([]byte(raw[0]), &req); err != nil {
		return status.Errorf(codes.InvalidArgument, "analysis request: %v", err)
	}
	rdr, err := flight.NewRecordReader(serverStream{stream}, ipc.WithAllocator(memory.DefaultAllocator))
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "rows: %v", err)
	}
	defer rdr.Release()
	res, err := s.impl.Run(stream.Context(), &req, rdr)
	if err == nil {
		err = rdr.Err()
	}
	if err != nil {
		return status.Errorf(codes.Aborted, "analysis %s: %v", req.Analysis, err)
	}
	// Drain what the analysis left unread, so the node's stream completes.
	for rdr.Next() {
	}
	body, err := json.Marshal(res)
	if err != nil {
		return status.Errorf(codes.Internal, "encode the answer: %v", err)
	}
	return stream.SendMsg(&flight.Result{Body: body})
}

// Client calls a plugin's analysis from the node.
type Client struct{ conn *grpc.ClientConn }

type clientStream struct{ grpc.ClientStream }

func (c clientStream) Send(fd *flight.FlightData) error { return c.SendMsg(fd) }

// Run streams rows to the plugin and returns its answer unchecked (the caller checks it with
// Request.Check) and the number of rows sent.
func (c *Client) Run(ctx context.Context, req *Request, rows array.RecordReader) (*Result, int64, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, requestMD, string(body)))
	defer cancel()
	stream, err := c.conn.NewStream(ctx, &serviceDesc.Streams[0], runMethod, grpc.MaxCallRecvMsgSize(MaxResultBytes))
	if err != nil {
		return nil, 0, fmt.Errorf("open the analysis stream: %w", err)
	}
	w := flight.NewRecordWriter(clientStream{stream}, ipc.WithSchema(rows.Schema()))
	var n int64
	wrote := false
	for rows.Next() {
		rec := rows.Record()
		if err := w.Write(rec); err != nil {
			return nil, n, sendErr(stream, err)
		}
		n += rec.NumRows()
		wrote = true
	}
	if err := rows.Err(); err != nil {
		return nil, n, err
	}
	if !wrote {
		// The schema travels with the first batch: an empty one says "no rows".
		cols := emptyColumns(rows)
		empty := array.NewRecord(rows.Schema(), cols, 0)
		err := w.Write(empty)
		empty.Release()
		for _, c := range cols {
			c.Release()
		}
		if err != nil {
			return nil, n, sendErr(stream, err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, n, sendErr(stream, err)
	}
	if err := stream.CloseSend(); err != nil {
		return nil, n, err
	}
	out := new(flight.Result)
	if err := stream.RecvMsg(out); err != nil {
		return nil, n, fmt.Errorf("analysis answer: %w", err)
	}
	var res Result
	if err := json.Unmarshal(out.Body, &res); err != nil {
		return nil, n, fmt.Errorf("%w: %v", ErrShape, err)
	}
	return &res, n, nil
}

// sendErr prefers the plugin's own status (why it stopped reading) over io.EOF.
func sendErr(stream grpc.ClientStream, err error) error {
	if errors.Is(err, io.EOF) {
		if rerr := stream.RecvMsg(new(flight.Result)); rerr != nil {
			return fmt.Errorf("analysis stopped reading: %w", rerr)
		}
	}
	return fmt.Errorf("stream rows to the analysis: %w", err)
}

func emptyColumns(rows array.RecordReader) []arrow.Array {
	sc := rows.Schema()
	cols := make([]arrow.Array, sc.NumFields())
	for i, f := range sc.Fields() {
		b := array.NewBuilder(memory.DefaultAllocator, f.Type)
		cols[i] = b.NewArray()
		b.Release()
	}
	return cols
}
