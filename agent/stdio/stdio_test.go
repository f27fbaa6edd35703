package stdio

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func startWith(t *testing.T, s *Streams, script string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s.ChildStdio()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.CloseChildEnds()
	return cmd
}

func readAll(t *testing.T, s *Streams, which Stream, chunk int) []byte {
	t.Helper()
	var out []byte
	for {
		b, err := s.Read(context.Background(), which, chunk)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		out = append(out, b...)
	}
}

func TestOutputDrainsAfterExit(t *testing.T) {
	s, err := NewPipes(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cmd := startWith(t, s, "echo out; echo err >&2; exit 3")
	// Let the process exit before anyone reads: everything must still arrive.
	err = cmd.Wait()
	s.MarkExited()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("wait: %v", err)
	}
	if got := readAll(t, s, Stdout, 3); string(got) != "out\n" {
		t.Errorf("stdout %q", got)
	}
	if got := readAll(t, s, Stderr, 0); string(got) != "err\n" {
		t.Errorf("stderr %q", got)
	}
}

// A slow reader with a small pipe makes the writer wait; nothing is lost.
func TestSlowReaderLosesNothing(t *testing.T) {
	s, err := NewPipes(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, f := range map[string]interface{ Fd() uintptr }{"stdout": s.childOut, "stderr": s.childErr, "stdin": s.childIn} {
		if got, err := unix.FcntlInt(f.Fd(), unix.F_GETPIPE_SZ, 0); err != nil || got != 4096 {
			t.Errorf("%s pipe size %d (%v), want 4096", name, got, err)
		}
	}
	cmd := startWith(t, s, "head -c 4194304 /dev/urandom | tee /dev/stderr | sha256sum >&2; head -c 1048576 /dev/zero")
	go func() { _ = cmd.Wait(); s.MarkExited() }()
	errc := make(chan []byte)
	go func() { errc <- readAll(t, s, Stderr, 1000) }()
	var out []byte
	for {
		b, err := s.Read(context.Background(), Stdout, 777)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
		time.Sleep(time.Microsecond)
	}
	if len(out) != 1<<20 || !bytes.Equal(out, make([]byte, 1<<20)) {
		t.Errorf("stdout: %d bytes", len(out))
	}
	stderr := <-errc
	if len(stderr) < 4<<20 {
		t.Fatalf("stderr: %d bytes", len(stderr))
	}
	data, sum := stderr[:4<<20], stderr[4<<20:]
	want := sha256.Sum256(data)
	if !bytes.HasPrefix(sum, []byte(hexString(want[:]))) {
		t.Errorf("checksum mismatch: reader computed %x, writer printed %q", want, sum)
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func TestStdinRoundTrip(t *testing.T) {
	s, err := NewPipes(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cmd := startWith(t, s, "tr a-z A-Z")
	go func() { _ = cmd.Wait(); s.MarkExited() }()
	if _, err := s.Write(context.Background(), []byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(context.Background(), []byte("wren\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(context.Background(), nil); err != nil { // EOF
		t.Fatal(err)
	}
	if _, err := s.Write(context.Background(), []byte("late")); !errors.Is(err, ErrStdinClosed) {
		t.Errorf("write after close: %v, want ErrStdinClosed", err)
	}
	if got := readAll(t, s, Stdout, 0); string(got) != "HELLO WREN\n" {
		t.Errorf("stdout %q", got)
	}
}

// A background child that keeps stdout open must not keep the reader blocked
// forever once the process itself has exited.
func TestDrainWindowEndsWithLingeringWriter(t *testing.T) {
	s, err := NewPipes(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cmd := startWith(t, s, "sleep 30 & echo $! >&2; echo last; exit 0")
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	s.MarkExited()
	if got := readAll(t, s, Stdout, 0); string(got) != "last\n" {
		t.Errorf("stdout %q", got)
	}
	b, err := s.Read(context.Background(), Stderr, 64)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("background pid %q: %v", b, err)
	}
	_ = unix.Kill(pid, unix.SIGKILL) // best effort clean-up
}

func TestReadHonoursContext(t *testing.T) {
	s, err := NewPipes(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cmd := startWith(t, s, "exec sleep 30")
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Read(ctx, Stdout, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read: %v, want DeadlineExceeded", err)
	}
}

func TestResizeWithoutTerminal(t *testing.T) {
	s, err := NewPipes(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseChildEnds()
	defer s.Close()
	if err := s.Resize(24, 80); !errors.Is(err, ErrNoTerminal) {
		t.Fatalf("resize: %v", err)
	}
}

// Each RPC has its own context, cancelled when the RPC returns. A read's
// context ending after the read must not cut the next read short (a stale
// deadline would look like EOF and lose output).
func TestEndedContextsDoNotCutLaterReads(t *testing.T) {
	s, err := NewPipes(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const total = 8 << 20
	cmd := startWith(t, s, "head -c 8388608 /dev/zero")
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var n int
	for n < total {
		ctx, cancel := context.WithCancel(context.Background())
		b, err := s.Read(ctx, Stdout, 4096)
		cancel()
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		n += len(b)
	}
}

// pipesForTest makes pipe streams of the given size (0: the kernel's)
// closed when the test ends, and returns them with the child's stdout.
func pipesForTest(t *testing.T, size int) (*Streams, *os.File) {
	t.Helper()
	s, err := NewPipes(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	t.Cleanup(s.CloseChildEnds)
	_, w, _ := s.ChildStdio()
	return s, w
}
