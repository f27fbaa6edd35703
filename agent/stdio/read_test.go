package stdio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/replyhook"
)

// A read with a large Len returns everything the pipe holds in one reply,
// not one pipe page or a fixed chunk, and its buffer is sized to the data.
func TestReadReturnsAllBufferedOutput(t *testing.T) {
	s, err := NewPipes(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, w, _ := s.ChildStdio()
	want := bytes.Repeat([]byte("0123456789abcdef"), 48<<10) // 768 KiB
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read(context.Background(), Stdout, MaxRead)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("one read returned %d bytes, want all %d buffered", len(got), len(want))
	}
	if cap(got) != len(got) {
		t.Errorf("reply buffer has capacity %d for %d bytes", cap(got), len(got))
	}
}

// A read returns as soon as it has some data: it never waits to fill Len.
// (The writer stays open, so a read that waited for more would hang until
// the test's deadline.)
func TestReadDoesNotWaitToFillLen(t *testing.T) {
	s, w := pipesForTest(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, line := range []string{"first\n", "second line\n"} {
		if _, err := w.WriteString(line); err != nil {
			t.Fatal(err)
		}
		got, err := s.Read(ctx, Stdout, MaxRead)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if string(got) != line {
			t.Errorf("read %q, want %q", got, line)
		}
		if cap(got) > len(line) {
			t.Errorf("reply buffer of %d bytes for %d bytes of output", cap(got), len(line))
		}
	}
}

// Len bounds the reply even when more is buffered; the rest comes next.
func TestReadHonoursLen(t *testing.T) {
	s, err := NewPipes(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, w, _ := s.ChildStdio()
	if _, err := w.WriteString("abcdefghij"); err != nil {
		t.Fatal(err)
	}
	s.CloseChildEnds()
	var parts []string
	for {
		b, err := s.Read(context.Background(), Stdout, 4)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, string(b))
	}
	if want := []string{"abcd", "efgh", "ij"}; !equalStrings(parts, want) {
		t.Errorf("reads %q, want %q", parts, want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A read blocked on an empty stream ends with EOF when the streams are
// closed under it (RemoveContainer, or an exec's output released).
func TestCloseEndsBlockedRead(t *testing.T) {
	s, err := NewPipes(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseChildEnds() // the writer stays open: only Close can end the read
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(context.Background(), Stderr, 100)
		errc <- err
	}()
	waitBlockedRead(t)
	s.Close()
	if err := <-errc; !errors.Is(err, io.EOF) {
		t.Fatalf("read after close: %v, want EOF", err)
	}
}

// A read that is already waiting when the process exits switches to the
// drain window: a background child holding the pipe cannot keep it forever.
func TestExitEndsBlockedReadAfterDrainWindow(t *testing.T) {
	s, err := NewPipes(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer s.CloseChildEnds() // a writer that outlives the "process"
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(context.Background(), Stdout, 100)
		errc <- err
	}()
	waitBlockedRead(t)
	s.MarkExited()
	if err := <-errc; !errors.Is(err, io.EOF) {
		t.Fatalf("read after exit: %v, want EOF", err)
	}
}

// waitBlockedRead gives a reader goroutine time to block; the tests above
// pass whether or not it has, but only exercise the wake-up path if so.
func waitBlockedRead(t *testing.T) {
	t.Helper()
	time.Sleep(50 * time.Millisecond)
}

// A terminal's output arrives through the pty master, whose reads return at
// most a line discipline buffer at a time: large output must come through
// whole and in order, and a large Len must not cost a large buffer.
func TestTerminalReads(t *testing.T) {
	s, err := NewTerminal()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	master, slave := openPty(t)
	defer slave.Close()
	if err := unix.Sendmsg(int(s.ConsoleSocket().Fd()), []byte("/dev/pts/x"), unix.UnixRights(int(master.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	master.Close()
	s.CloseChildEnds()
	if err := s.ReceiveConsole(); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Read(context.Background(), Stderr, 10); !errors.Is(err, io.EOF) || len(b) != 0 {
		t.Errorf("stderr of a terminal: %q, %v; want EOF", b, err)
	}
	// Raw mode: the line discipline passes bytes through unchanged.
	tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ICANON
	if err := unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 256<<10)
	for i := range want {
		want[i] = byte('a' + i%26)
	}
	go func() {
		if _, err := slave.Write(want); err != nil {
			t.Errorf("write to the pty: %v", err)
		}
	}()
	var got []byte
	for len(got) < len(want) {
		b, err := s.Read(context.Background(), Stdout, MaxRead)
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		if cap(b) > len(want) {
			t.Fatalf("reply buffer of %d bytes", cap(b))
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("terminal output differs (%d bytes read)", len(got))
	}
}

func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	sl, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	return m, sl
}

// With a server that reports written replies (replyhook), reply buffers
// are recycled, but never while a reply still points into one: each
// reply's bytes stay as read until its hook ran.
func TestPooledRepliesStayIntactUntilWritten(t *testing.T) {
	s, w := pipesForTest(t, 0)
	const size = 32 << 10 // pooled (at least minPooled)
	type reply struct {
		data    []byte
		want    byte
		written func()
	}
	var pending []reply
	for i := range 6 {
		want := byte('a' + i)
		if _, err := w.Write(bytes.Repeat([]byte{want}, size)); err != nil {
			t.Fatal(err)
		}
		ctx, written := replyhook.With(context.Background())
		data, err := s.Read(ctx, Stdout, MaxRead)
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, reply{data, want, written})
		// Release every other reply as soon as it is "written", so that
		// later reads do take buffers from the pool.
		if i%2 == 1 {
			written()
			pending = pending[:len(pending)-1]
		}
		for _, p := range pending {
			if len(p.data) != size || bytes.Count(p.data, []byte{p.want}) != size {
				t.Fatalf("after read %d, an unwritten reply of %q no longer holds its bytes", i, p.want)
			}
		}
	}
	for _, p := range pending {
		p.written()
	}
}
