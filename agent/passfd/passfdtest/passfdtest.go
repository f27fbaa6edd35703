// Package passfdtest plays the host's side of passfd IO in tests. This
// machine has no vsock transport, so the streams come over a unix socket
// whose peers bind "@passfd-PORT", which passfd.PortOf reads as a vsock
// peer's port. The pod VM test (harness/e2e TestPodVM/Passfd) uses vsock.
package passfdtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/wren-vm/wren/agent/passfd"
)

// Serve serves passfd streams on a unix socket until the test ends and
// returns them with the socket's path.
func Serve(t testing.TB) (*passfd.Streams, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "passfd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return passfd.Serve(ctx, ln, nil), sock
}

var seq atomic.Uint64

// Dial connects a stream to sock from port, closed when the test ends.
func Dial(t testing.TB, sock string, port uint32) *net.UnixConn {
	t.Helper()
	name := fmt.Sprintf("@passfd-%d-%d-%d", port, os.Getpid(), seq.Add(1))
	local := &net.UnixAddr{Name: name, Net: "unix"}
	c, err := net.DialUnix("unix", local, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
