package nodeclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/samsyn/samsyn/queries/wire"
)

// MaxReleaseBytes bounds what a node may send back for one query.
const MaxReleaseBytes = 64 << 20

// Client talks to one node.
type Client struct {
	Association string
	Addr        string
	conn        *grpc.ClientConn
	flight      flight.Client
	health      healthpb.HealthClient
	alloc       memory.Allocator
}

// Dial prepares a connection to a node at addr; tlsConf must pin the node's identity.
// gRPC connects lazily and reconnects by itself, so one Client lives as long as the coordinator.
func Dial(association, addr string, tlsConf *tls.Config, alloc memory.Allocator) (*Client, error) {
	return dial(association, addr, tlsConf, alloc)
}

// DialTunnel prepares a connection to a node that dials out: every gRPC connection is a stream
// opened by dialer through the node's tunnel (tunnel.Hub.Dialer), carrying the same mutual TLS
// as a direct connection. addr only names the node in errors.
func DialTunnel(association, addr string, dialer func(context.Context, string) (net.Conn, error), tlsConf *tls.Config, alloc memory.Allocator) (*Client, error) {
	return dial(association, "passthrough:///"+addr, tlsConf, alloc, grpc.WithContextDialer(dialer))
}

func dial(association, addr string, tlsConf *tls.Config, alloc memory.Allocator, extra ...grpc.DialOption) (*Client, error) {
	if tlsConf == nil {
		return nil, errors.New("nodeclient: mutual TLS is required")
	}
	if alloc == nil {
		alloc = memory.DefaultAllocator
	}
	opts := append([]grpc.DialOption{}, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
		// Reconnect within a second or two of a node's return, not gRPC's default two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxReleaseBytes)))
	conn, err := grpc.NewClient(addr, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("dial node %s at %s: %w", association, addr, err)
	}
	return &Client{Association: association, Addr: addr, conn: conn,
		flight: flight.NewClientFromConn(conn, nil), health: healthpb.NewHealthClient(conn), alloc: alloc}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Release is a node's answer to one ticket.
type Release struct {
	Table    arrow.Record // the caller releases it
	Metadata map[string]string
}

// Get presents ticket and reads the whole protected table.
func (c *Client) Get(ctx context.Context, ticket []byte) (*Release, error) {
	// Wait for the connection within ctx's deadline: a node that was down a moment ago (or not
	// yet up when the coordinator first dialled) is reached as soon as it is back, instead of
	// failing at once while gRPC waits out its reconnect backoff. A node still down costs the
	// deadline, once per study (the coordinator then leaves it out).
	stream, err := c.flight.DoGet(ctx, &flight.Ticket{Ticket: ticket}, grpc.WaitForReady(true))
	if err != nil {
		return nil, err
	}
	rd, err := flight.NewRecordReader(stream, ipcAllocator(c.alloc))
	if err != nil {
		return nil, err
	}
	defer rd.Release()
	var recs []arrow.Record
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	for rd.Next() {
		r := rd.Record()
		r.Retain()
		recs = append(recs, r)
	}
	if err := rd.Err(); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	sc := rd.Schema()
	md := map[string]string{}
	for i, k := range sc.Metadata().Keys() {
		md[k] = sc.Metadata().Values()[i]
	}
	rec, err := concat(c.alloc, sc, recs)
	if err != nil {
		return nil, err
	}
	return &Release{Table: rec, Metadata: md}, nil
}

// Healthy asks the node's health service.
func (c *Client) Healthy(ctx context.Context) error {
	resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("node %s is %s", c.Association, resp.GetStatus())
	}
	return nil
}

// Transient reports whether err is worth a retry: the node was unreachable or busy, not a
// refusal.
func Transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// Status is what a node's health action reports.
type Status = wire.Health

// Status asks the node's Flight health action for its snapshot and versions.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	stream, err := c.flight.DoAction(ctx, &flight.Action{Type: wire.ActionHealth})
	if err != nil {
		return nil, err
	}
	res, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var st Status
	if err := json.Unmarshal(res.GetBody(), &st); err != nil {
		return nil, fmt.Errorf("node %s health: %w", c.Association, err)
	}
	return &st, nil
}
