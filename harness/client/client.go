// Package client reaches a Wren (or Kata) agent from the host: it dials the
// agent's address forms and hands back typed ttrpc clients for
// grpc.AgentService and grpc.Health.
package client

import (
	"context"
	"fmt"
	"net"

	"github.com/containerd/ttrpc"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// Client is a connection to one agent.
type Client struct {
	conn   net.Conn
	ttrpc  *ttrpc.Client
	Agent  agentpb.AgentServiceService
	Health agentpb.HealthService
}

// Dial connects to the agent at addr: vsock://CID:PORT,
// hvsock://UDS_PATH:PORT, unix:///path or unix://@name.
func Dial(ctx context.Context, addr string) (*Client, error) {
	conn, err := DialConn(ctx, addr)
	if err != nil {
		return nil, err
	}
	return New(conn), nil
}

// New wraps an established connection.
func New(conn net.Conn) *Client {
	tc := ttrpc.NewClient(conn)
	return &Client{
		conn:   conn,
		ttrpc:  tc,
		Agent:  agentpb.NewAgentServiceClient(tc),
		Health: agentpb.NewHealthClient(tc),
	}
}

// Call invokes any method by service and method name, for callers that
// pick the RPC at run time (wrenctl).
func (c *Client) Call(ctx context.Context, service, method string, req, resp any) error {
	if err := c.ttrpc.Call(ctx, service, method, req, resp); err != nil {
		return fmt.Errorf("%s/%s: %w", service, method, err)
	}
	return nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.ttrpc.Close() }
