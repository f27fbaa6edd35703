package hostvsock

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/mdlayher/vsock"
)

// This machine has neither vhost-vsock nor vsock loopback, so no real
// vsock connection can be accepted here: the listener below hands Only
// connections with the peer addresses a guest's vsock listener reports.
// The same filter runs on real vsock connections in the pod VM, where
// harness/e2e checks that a container reaches none of the agent's ports.
type fakeListener struct {
	conns []*fakeConn
}

func (l *fakeListener) Accept() (net.Conn, error) {
	if len(l.conns) == 0 {
		return nil, net.ErrClosed
	}
	c := l.conns[0]
	l.conns = l.conns[1:]
	return c, nil
}
func (l *fakeListener) Close() error   { return nil }
func (l *fakeListener) Addr() net.Addr { return &vsock.Addr{ContextID: AnyCID, Port: 1024} }

type fakeConn struct {
	net.Conn
	peer   net.Addr
	closed bool
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.peer }
func (c *fakeConn) Close() error         { c.closed = true; return nil }

type lockedBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func TestOnlyAcceptsTheHost(t *testing.T) {
	peers := []net.Addr{
		&vsock.Addr{ContextID: 1, Port: 50000},  // VMADDR_CID_LOCAL: loopback
		&vsock.Addr{ContextID: 3, Port: 50001},  // the guest's own CID
		&vsock.Addr{ContextID: 0, Port: 50002},  // the hypervisor
		&vsock.Addr{ContextID: 2, Port: 50003},  // the host
		&net.UnixAddr{Name: "@x", Net: "unix"},  // not vsock at all
		&vsock.Addr{ContextID: 42, Port: 50004}, // another guest
		&vsock.Addr{ContextID: 2, Port: 50005},  // the host again
	}
	fl := &fakeListener{}
	for _, p := range peers {
		fl.conns = append(fl.conns, &fakeConn{peer: p})
	}
	all := append([]*fakeConn(nil), fl.conns...)
	var logged lockedBuffer
	ln := Only(fl, slog.New(slog.NewTextHandler(&logged, nil)))

	var accepted []string
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted = append(accepted, c.RemoteAddr().String())
	}
	want := []string{"host(2):50003", "host(2):50005"}
	if strings.Join(accepted, " ") != strings.Join(want, " ") {
		t.Errorf("accepted %v, want only the host's %v", accepted, want)
	}
	for _, c := range all {
		if FromHost(c.peer) == c.closed {
			t.Errorf("peer %v: closed=%v", c.peer, c.closed)
		}
	}
	if n := strings.Count(logged.String(), "refused a vsock connection"); n != 1 {
		t.Errorf("%d refusals logged for 5 refused peers, want the first only:\n%s", n, logged.String())
	}
}

func TestFromHost(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want bool
	}{
		{&vsock.Addr{ContextID: HostCID}, true},
		{&vsock.Addr{ContextID: 1}, false},
		{&vsock.Addr{ContextID: 3}, false},
		{&vsock.Addr{ContextID: AnyCID}, false},
		{nil, false},
		{&net.TCPAddr{}, false},
	} {
		if got := FromHost(c.addr); got != c.want {
			t.Errorf("FromHost(%v) = %v, want %v", c.addr, got, c.want)
		}
	}
}
