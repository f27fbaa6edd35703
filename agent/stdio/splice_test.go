package stdio

import (
	"bytes"
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/replysplice"
)

// With a splicing server, a pipe holding at least minSplice bytes is not
// read: its bytes are offered to the server, and the stream stays locked
// (a second read waits) until the reply is done. Less than minSplice is
// read as before.
func TestLargeOutputIsOfferedToTheServer(t *testing.T) {
	s, w := pipesForTest(t, 256<<10)
	want := bytes.Repeat([]byte("wren"), 20<<10) // 80 KiB
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	ctx, tail := replysplice.With(context.Background())
	replysplice.Accept(ctx, 1)
	got, err := s.Read(ctx, Stdout, 64<<10)
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Read = %d bytes (nil %v), %v; want an empty reply and the bytes offered", len(got), got == nil, err)
	}
	field, fd, n, ok := tail.Take()
	if !ok || field != 1 || n != 64<<10 {
		t.Fatalf("offer: field %d, %d bytes, ok %v; want field 1 and the 64 KiB asked for", field, n, ok)
	}
	// What the server would splice: the first n bytes of the output.
	buf := make([]byte, n)
	if m, err := unix.Read(fd, buf); err != nil || !bytes.Equal(buf[:m], want[:n]) {
		t.Fatalf("offered descriptor gave %d bytes (%v), want the stream's first %d", m, err, n)
	}

	second := make(chan []byte)
	go func() {
		b, _ := s.Read(context.Background(), Stdout, MaxRead)
		second <- b
	}()
	select {
	case <-second:
		t.Fatal("a second read ran while the offered reply was being sent")
	case <-time.After(100 * time.Millisecond):
	}
	tail.Done()
	if b := <-second; !bytes.Equal(b, want[n:]) {
		t.Fatalf("the read after the reply returned %d bytes, want the remaining %d", len(b), len(want)-n)
	}

	small := []byte("a short line\n")
	if _, err := w.Write(small); err != nil {
		t.Fatal(err)
	}
	ctx, tail = replysplice.With(context.Background())
	defer tail.Done()
	replysplice.Accept(ctx, 1)
	if got, err := s.Read(ctx, Stdout, MaxRead); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("small output: %q, %v; want it read directly", got, err)
	}
	if _, _, _, ok := tail.Take(); ok {
		t.Error("small output was offered")
	}
}

// A read waiting for a stream whose offered reply is still being sent
// gives up when its context ends: a client that stops reading its
// connection must not pin other readers of the stream.
func TestReadBehindAnOfferedReplyHonoursItsContext(t *testing.T) {
	s, w := pipesForTest(t, 256<<10)
	if _, err := w.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	ctx, tail := replysplice.With(context.Background())
	defer tail.Done()
	replysplice.Accept(ctx, 1)
	if b, err := s.Read(ctx, Stdout, MaxRead); err != nil || len(b) != 0 {
		t.Fatalf("Read = %d bytes, %v; want the bytes offered", len(b), err)
	}
	waiting, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := s.Read(waiting, Stdout, MaxRead); err != context.DeadlineExceeded {
		t.Fatalf("read behind the offered reply: %v, want its context's DeadlineExceeded", err)
	}
}
