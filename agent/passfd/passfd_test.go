package passfd

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/wren-vm/wren/agent/errdefs"
)

// This machine has no vsock transport, so the host's connections come
// over a unix socket whose peers bind "@passfd-PORT", the stand-in for a
// vsock peer's port (PortOf). The pod VM test (harness/e2e) uses vsock.
func serveUnix(t *testing.T) (*Streams, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "passfd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return Serve(ctx, ln, nil), sock
}

func dialFrom(t *testing.T, sock string, port uint32) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", &net.UnixAddr{Name: "@passfd-" + strconv.Itoa(int(port)), Net: "unix"}, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestTakeGivesTheConnectionOfItsPort(t *testing.T) {
	s, sock := serveUnix(t)
	a, b := dialFrom(t, sock, 4001), dialFrom(t, sock, 4002)
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
	// The file is blocking (a process must not see EAGAIN) and the
	// connection is no longer the agent's: only one taker gets it.
	_ = a
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Take(ctx, 4002); err == nil {
		t.Error("a port was taken twice")
	}
	if f, err := s.Take(context.Background(), 0); f != nil || err != nil {
		t.Errorf("port 0: %v %v, want no stream", f, err)
	}
}

func TestTakeWaitsForALateConnection(t *testing.T) {
	s, sock := serveUnix(t)
	got := make(chan error, 1)
	go func() {
		f, err := s.Take(context.Background(), 4100)
		if err == nil {
			f.Close()
		}
		got <- err
	}()
	dialFrom(t, sock, 4100)
	if err := <-got; err != nil {
		t.Fatalf("a connection that came after the request: %v", err)
	}
}

func TestTakeGivesUpAfterTheStreamTimeout(t *testing.T) {
	s, _ := serveUnix(t)
	if _, err := s.Take(context.Background(), 4200); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Fatalf("no connection from the port: %v, want not found", err)
	}
}

func TestPendingConnectionsAreBounded(t *testing.T) {
	s, sock := serveUnix(t)
	for p := uint32(1); p <= MaxPending+2; p++ {
		dialFrom(t, sock, 5000+p)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		n, oldest := len(s.pending), s.pending[5001]
		s.mu.Unlock()
		if n == MaxPending && oldest == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections wait (the first still there: %v), want %d without the oldest", n, oldest != nil, MaxPending)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
