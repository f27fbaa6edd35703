package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hybridServer is a stand-in for the VMM side of hybrid vsock (Firecracker,
// Cloud Hypervisor or wren-vsockd): this machine has no guest to forward to,
// so answer decides the reply to each CONNECT line and, after OK, the server
// echoes the stream.
func hybridServer(t *testing.T, path string, answer func(line string) string) net.Listener {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				reply := answer(strings.TrimSuffix(line, "\n"))
				if reply == "" {
					_, _ = io.Copy(io.Discard, r) // never answer
					return
				}
				if _, err := io.WriteString(conn, reply); err != nil || !strings.HasPrefix(reply, "OK ") {
					return
				}
				_, _ = io.Copy(conn, r)
			}()
		}
	}()
	return ln
}

func TestHybridVsockOK(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	var got string
	hybridServer(t, path, func(line string) string { got = line; return "OK 1073741824\n" })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := DialConn(ctx, "hvsock://"+path+":1024")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got != "CONNECT 1024" {
		t.Errorf("server saw %q, want CONNECT 1024", got)
	}
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
}

func TestHybridVsockNeverAnswers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	hybridServer(t, path, func(string) string { return "" })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := DialConn(ctx, "hvsock://"+path+":1024")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestHybridVsockGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	calls := 0
	hybridServer(t, path, func(string) string { calls++; return "HELLO THERE\n" })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := DialConn(ctx, "hvsock://"+path+":1024")
	if err == nil || !strings.Contains(err.Error(), `got "HELLO THERE"`) {
		t.Fatalf("err = %v, want a handshake error quoting the reply", err)
	}
	if calls != 1 {
		t.Errorf("garbage answer retried: %d attempts", calls)
	}
	if ctx.Err() != nil {
		t.Error("a garbage answer waited for the deadline instead of failing at once")
	}
}

func TestHybridVsockOverlongReply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	hybridServer(t, path, func(string) string { return strings.Repeat("x", 200) + "\n" })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := DialConn(ctx, "hvsock://"+path+":1024"); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("err = %v, want an overlong-reply error", err)
	}
}

func TestHybridVsockRetriesUntilListening(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	started := make(chan struct{})
	go func() {
		time.Sleep(200 * time.Millisecond)
		hybridServer(t, path, func(string) string { return "OK 5\n" })
		close(started)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := DialConn(ctx, "hvsock://"+path+":1024")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	<-started
}

func TestHybridVsockRetriesWhileGuestPortDown(t *testing.T) {
	// A VMM closes the connection when the guest port refuses; the dialer
	// must keep trying until the guest listens.
	path := filepath.Join(t.TempDir(), "v.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	attempts := make(chan int, 1)
	go func() {
		for n := 1; ; n++ {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = bufio.NewReader(conn).ReadString('\n')
			if n < 3 {
				conn.Close()
				continue
			}
			_, _ = io.WriteString(conn, "OK 9\n")
			attempts <- n
			_, _ = io.Copy(io.Discard, conn)
			conn.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := DialConn(ctx, "hvsock://"+path+":1024")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if n := <-attempts; n != 3 {
		t.Errorf("connected on attempt %d, want 3", n)
	}
}

func TestDialBadAddress(t *testing.T) {
	ctx := context.Background()
	for addr, want := range map[string]string{
		"vsock://-1:1024": "context id is required",
		"tcp://x:1":       "unknown scheme",
		"unix://rel":      "must be absolute",
	} {
		if _, err := DialConn(ctx, addr); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DialConn(%q) = %v, want error containing %q", addr, err, want)
		}
	}
}

func TestHandshakeReturnsTheHostPort(t *testing.T) {
	for reply, want := range map[string]uint32{"OK 1073741824\n": 1073741824, "OK 1\n": 1, "OK x\n": 0} {
		rw := readWriter{bytes.NewReader([]byte(reply)), &bytes.Buffer{}}
		if got, err := handshake(rw, 1027); err != nil || got != want {
			t.Errorf("%q: port %d %v, want %d", reply, got, err, want)
		}
	}
}
