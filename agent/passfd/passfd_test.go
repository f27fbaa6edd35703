package passfd_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mdlayher/vsock"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/passfd"
	"github.com/wren-vm/wren/agent/passfd/passfdtest"
)

func TestTakeGivesTheConnectionOfItsPort(t *testing.T) {
	s, sock := passfdtest.Serve(t)
	passfdtest.Dial(t, sock, 4001)
	b := passfdtest.Dial(t, sock, 4002)
	f, err := s.Take(context.Background(), 4002)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("to b")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "to b" {
		t.Fatalf("port 4002's peer read %q %v", buf, err)
	}
	// The file is blocking: a process must not see EAGAIN.
	if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
		t.Errorf("flags %#x %v: the file is non-blocking", fl, err)
	}
	// The connection is no longer the agent's: only one taker gets it,
	// and the other port's stream still waits for its own.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Take(ctx, 4002); err == nil {
		t.Error("a port was taken twice")
	}
	if fa, err := s.Take(context.Background(), 4001); err != nil {
		t.Errorf("port 4001 after 4002 was taken: %v", err)
	} else {
		fa.Close()
	}
	if f, err := s.Take(context.Background(), 0); f != nil || err != nil {
		t.Errorf("port 0: %v %v, want no stream", f, err)
	}
}

func TestTakeWaitsForALateConnection(t *testing.T) {
	s, sock := passfdtest.Serve(t)
	got := make(chan error, 1)
	go func() {
		f, err := s.Take(context.Background(), 4100)
		if err == nil {
			f.Close()
		}
		got <- err
	}()
	passfdtest.Dial(t, sock, 4100)
	if err := <-got; err != nil {
		t.Fatalf("a connection that came after the request: %v", err)
	}
}

func TestTakeGivesUpAfterTheStreamTimeout(t *testing.T) {
	s, _ := passfdtest.Serve(t)
	if _, err := s.Take(context.Background(), 4200); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Fatalf("no connection from the port: %v, want not found", err)
	}
}

// TestPendingConnectionsAreBounded: past MaxPending waiting connections
// the oldest is closed (its host end reads EOF) and the newest still waits.
func TestPendingConnectionsAreBounded(t *testing.T) {
	s, sock := passfdtest.Serve(t)
	var first net.Conn
	for p := uint32(1); p <= passfd.MaxPending+1; p++ {
		c := passfdtest.Dial(t, sock, 5000+p)
		if p == 1 {
			first = c
		}
	}
	if err := first.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := first.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the oldest connection: read %d, %v; want EOF (dropped)", n, err)
	}
	f, err := s.Take(context.Background(), 5000+passfd.MaxPending+1)
	if err != nil {
		t.Fatalf("the newest connection: %v", err)
	}
	f.Close()
}

func TestPortOf(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		port uint32
		ok   bool
	}{
		{&vsock.Addr{ContextID: 2, Port: 1234}, 1234, true},
		{&net.UnixAddr{Name: "@passfd-7"}, 7, true},
		{&net.UnixAddr{Name: "@passfd-7-81-2"}, 7, true},
		{&net.UnixAddr{Name: "@passfd-x"}, 0, false},
		{&net.UnixAddr{Name: "@other-7"}, 0, false},
		{&net.TCPAddr{Port: 7}, 0, false},
	} {
		if p, ok := passfd.PortOf(c.addr); p != c.port || ok != c.ok {
			t.Errorf("PortOf(%v) = %d, %v; want %d, %v", c.addr, p, ok, c.port, c.ok)
		}
	}
}
