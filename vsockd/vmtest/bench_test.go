package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/wren-vm/wren/vsockd"
)

// BenchmarkVsock measures wren-vsockd under a TCG guest (one VM for all
// sub-benchmarks): bulk throughput each way over one stream, echo
// round-trip latency, and the CONNECT/OK set-up time. TCG dominates the
// figures; they are for spotting regressions in the backend, not absolute
// vsock speed. scripts/bench-vsock.sh runs it.
func BenchmarkVsock(b *testing.B) {
	be := startBackend(b, b.TempDir())
	b.Cleanup(func() { _ = be.stop() })
	bootGuest(b, be)
	const chunk = 1 << 20

	b.Run("HostToGuest", func(b *testing.B) {
		c := dial(b, be, portSink)
		defer c.Close()
		buf := make([]byte, chunk)
		b.SetBytes(chunk)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		_ = c.(*net.UnixConn).CloseWrite()
		// The guest's count closes the measurement: everything arrived.
		line, err := bufio.NewReader(c).ReadString('\n')
		b.StopTimer()
		if n, _ := strconv.Atoi(strings.TrimSpace(line)); err != nil || n != b.N*chunk {
			b.Fatalf("guest received %q (%v), want %d", line, err, b.N*chunk)
		}
	})

	b.Run("GuestToHost", func(b *testing.B) {
		c := dial(b, be, portSource)
		defer c.Close()
		b.SetBytes(chunk)
		b.ResetTimer()
		fmt.Fprintf(c, "%d\n", b.N*chunk)
		n, err := io.Copy(io.Discard, c)
		b.StopTimer()
		if err != nil || n != int64(b.N*chunk) {
			b.Fatalf("received %d (%v), want %d", n, err, b.N*chunk)
		}
	})

	b.Run("RoundTrip64B", func(b *testing.B) {
		c := dial(b, be, portEcho)
		defer c.Close()
		msg := make([]byte, 64)
		got := make([]byte, 64)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("Connect", func(b *testing.B) {
		ctx := b.Context()
		for i := 0; i < b.N; i++ {
			c, err := vsockd.Dial(ctx, be.uds, portEcho)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}
