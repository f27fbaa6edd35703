package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/internal/qemutest"
	"github.com/wren-vm/wren/vsockd"
)

const (
	portEcho   = 1234
	portDial   = 1235
	portSink   = 1236
	portSource = 1237
	portReset  = 1238
	portNobody = 1239
)

type backend struct {
	dir, uds, vhost string
	srv             *vsockd.Server
	cancel          context.CancelFunc
	done            chan error
	stopOnce        sync.Once
	stopErr         error
}

func startBackend(t testing.TB, dir string) *backend {
	t.Helper()
	b := &backend{dir: dir, uds: filepath.Join(dir, "v.sock"), vhost: filepath.Join(dir, "vu.sock"), done: make(chan error, 1)}
	level := slog.LevelInfo
	if os.Getenv("VSOCKD_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
	srv, err := vsockd.New(vsockd.Config{GuestCID: 3, UDSPath: b.uds, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := vsockd.ListenUnix(b.vhost)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.srv, b.cancel = srv, cancel
	go func() { b.done <- srv.Serve(ctx, ln) }()
	return b
}

// stop shuts the backend down and returns Serve's result (again on later
// calls).
func (b *backend) stop() error {
	b.stopOnce.Do(func() {
		b.cancel()
		select {
		case b.stopErr = <-b.done:
		case <-time.After(30 * time.Second):
			b.stopErr = errors.New("Serve did not return within 30s")
		}
	})
	return b.stopErr
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// bootGuest boots a guest on b's vhost-user socket and waits until its
// vsock ports are up. QEMU is killed when the test ends.
func bootGuest(t testing.TB, b *backend) *qemutest.VM {
	t.Helper()
	qemutest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	art, err := Build(ctx, artifactDir(t))
	if err != nil {
		t.Fatal(err)
	}
	machine, args := QEMUArgs(b.vhost, 256)
	vm := qemutest.Start(t, qemutest.Config{
		Kernel: art.Kernel, Initrd: art.Initramfs, Append: "quiet",
		MemMB: 256, Machine: machine, Args: args,
	})
	if _, err := vm.WaitFor(ctx, "GUEST READY"); err != nil {
		t.Fatalf("%v\n%s", err, vm.Console())
	}
	return vm
}

func TestMain(m *testing.M) {
	code := m.Run()
	if artDir != "" {
		os.RemoveAll(artDir)
	}
	os.Exit(code)
}

var (
	artDirOnce sync.Once
	artDir     string
)

// artifactDir outlives single tests: the initramfs is built once per test
// binary; TestMain removes it.
func artifactDir(t testing.TB) string {
	artDirOnce.Do(func() {
		d, err := os.MkdirTemp("", "vsockd-vmtest-")
		if err != nil {
			t.Fatal(err)
		}
		artDir = d
	})
	return artDir
}

func dial(t testing.TB, b *backend, port uint32) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var c net.Conn
	// The guest's listener can lag "GUEST READY" by a moment; retry.
	for {
		var err error
		if c, err = vsockd.Dial(ctx, b.uds, port); err == nil {
			return c
		}
		select {
		case <-ctx.Done():
			t.Fatalf("dial guest port %d: %v", port, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// echoCheck sends n random bytes through the echo port and checks that the
// same bytes (by SHA-256) come back.
func echoCheck(t testing.TB, b *backend, n int) {
	t.Helper()
	c := dial(t, b, portEcho)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		buf := make([]byte, 256<<10)
		for left := n; left > 0; {
			k := min(left, len(buf))
			for i := 0; i < k; i += 8 {
				v := rng.Uint64()
				for j := 0; j < 8 && i+j < k; j++ {
					buf[i+j] = byte(v >> (8 * j))
				}
			}
			sent.Write(buf[:k])
			if _, err := c.Write(buf[:k]); err != nil {
				errc <- err
				return
			}
			left -= k
		}
		errc <- c.(*net.UnixConn).CloseWrite()
	}()
	got := sha256.New()
	m, err := io.Copy(got, c)
	if err != nil {
		t.Fatalf("read echo: %v after %d bytes", err, m)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if m != int64(n) {
		t.Fatalf("echoed %d bytes, sent %d", m, n)
	}
	if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatalf("echoed bytes differ from sent bytes (sha256)")
	}
}

func goroutines() int { return runtime.NumGoroutine() }

func TestGuestVsock(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU guests")
	}
	base := goroutines()
	b := startBackend(t, t.TempDir())
	t.Cleanup(func() { _ = b.stop() }) // a subtest checks stop's error
	vm := bootGuest(t, b)

	t.Run("RoundTrip", func(t *testing.T) {
		c := dial(t, b, portEcho)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		msg := []byte("hello, guest\n")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo: got %q want %q", got, msg)
		}
	})

	t.Run("HarnessClientDial", func(t *testing.T) {
		// The project's own client (harness/client) against the backend.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := client.DialConn(ctx, fmt.Sprintf("hvsock://%s:%d", b.uds, portEcho))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		if _, err := c.Write([]byte("ttrpc-ish\n")); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "ttrpc-ish\n" {
			t.Fatalf("echo via harness/client: %q %v", line, err)
		}
	})

	t.Run("Bulk64MiBEachWay", func(t *testing.T) {
		echoCheck(t, b, 64<<20)
	})

	t.Run("SinkAndSource", func(t *testing.T) {
		// One direction at a time: guest counts what it received, then
		// sends a requested amount.
		c := dial(t, b, portSink)
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		const n = 8 << 20
		if _, err := c.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.UnixConn).CloseWrite()
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || strings.TrimSpace(line) != fmt.Sprint(n) {
			t.Fatalf("sink counted %q (%v), want %d", line, err, n)
		}
		c = dial(t, b, portSource)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		fmt.Fprintf(c, "%d\n", n)
		m, err := io.Copy(io.Discard, c)
		if err != nil || m != n {
			t.Fatalf("source sent %d bytes (%v), want %d", m, err, n)
		}
	})

	t.Run("SlowHostReader", func(t *testing.T) {
		// The guest outpaces the host by far: flow control must hold the
		// guest back (its sends block on our credit) and lose nothing.
		c := dial(t, b, portSource)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		const n = 4 << 20
		fmt.Fprintf(c, "%d\n", n)
		buf := make([]byte, 32<<10)
		pos := 0
		for pos < n {
			time.Sleep(time.Millisecond)
			k, err := c.Read(buf)
			for i := 0; i < k; i++ {
				if want := byte((pos + i) % (64 << 10) * 7); buf[i] != want {
					t.Fatalf("byte %d is %d, want %d", pos+i, buf[i], want)
				}
			}
			pos += k
			if err != nil {
				break
			}
		}
		if pos != n {
			t.Fatalf("received %d bytes, want %d", pos, n)
		}
	})

	t.Run("Concurrent32", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := 0; i < 32; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				echoCheck(t, b, 256<<10+i*4099)
			}()
		}
		wg.Wait()
	})

	t.Run("GuestInitiated", func(t *testing.T) {
		const hostPort = 5000
		ln, err := net.Listen("unix", fmt.Sprintf("%s_%d", b.uds, hostPort))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c := dial(t, b, portDial)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		fmt.Fprintf(c, "DIAL %d\n", hostPort)
		hc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer hc.Close()
		_ = hc.SetDeadline(time.Now().Add(time.Minute))
		r := bufio.NewReader(c)
		if line, err := r.ReadString('\n'); err != nil || line != "OK\n" {
			t.Fatalf("guest dial: %q %v", line, err)
		}
		// host→(guest relay)→host listener and back.
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(hc).ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("host listener got %q %v", line, err)
		}
		if _, err := hc.Write([]byte("pong\n")); err != nil {
			t.Fatal(err)
		}
		if line, err := r.ReadString('\n'); err != nil || line != "pong\n" {
			t.Fatalf("relay back got %q %v", line, err)
		}
	})

	t.Run("GuestDialNobodyIsReset", func(t *testing.T) {
		c := dial(t, b, portDial)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		fmt.Fprintf(c, "DIAL %d\n", 5999)
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		// Linux reports our RST as ECONNRESET; a missing RST would be a
		// 2 s connect timeout (ETIMEDOUT) instead.
		if !strings.HasPrefix(line, "ERR") || !strings.Contains(line, "connection reset") {
			t.Fatalf("guest dial to a port nobody listens on: %q", line)
		}
	})

	t.Run("ConnectNobodyListening", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := vsockd.Dial(ctx, b.uds, portNobody)
		if err == nil {
			c.Close()
			t.Fatal("CONNECT to a port nobody listens on succeeded")
		}
		if ctx.Err() != nil {
			t.Fatalf("CONNECT was not refused promptly: %v", err)
		}
		// The backend is still fine.
		echoCheck(t, b, 1000)
	})

	t.Run("GuestDeviceReset", func(t *testing.T) {
		// A device reset (what a guest reboot does): the backend sees
		// the rings stopped and restarted on the same connection, closes
		// open streams, and serves new ones.
		open := dial(t, b, portEcho)
		defer open.Close()
		c := dial(t, b, portReset)
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || line != "OK\n" {
			t.Fatalf("reset port: %q %v", line, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := vm.WaitFor(ctx, "GUEST RESET DONE"); err != nil {
			t.Fatal(err)
		}
		_ = open.SetDeadline(time.Now().Add(time.Minute))
		if _, err := io.Copy(io.Discard, open); err != nil && !isReset(err) {
			t.Fatalf("stream across the reset: %v", err)
		}
		echoCheck(t, b, 1<<20)
	})

	t.Run("QEMUKilledMidTransfer", func(t *testing.T) {
		c := dial(t, b, portEcho)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		go func() {
			buf := make([]byte, 64<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
		// Kill once data is flowing.
		if _, err := io.CopyN(io.Discard, c, 1<<20); err != nil {
			t.Fatal(err)
		}
		vm.Kill()
		// The stream must end (not hang) once the VM is gone.
		if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Fatalf("stream after QEMU death: %v", err)
		}
		// A fresh VM on the same backend works.
		bootGuest(t, b)
		echoCheck(t, b, 1<<20)
	})

	if err := b.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// Everything the backend started is gone.
	deadline := time.Now().Add(10 * time.Second)
	for goroutines() > base+2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := goroutines(); n > base+2 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines left (started with %d):\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}
