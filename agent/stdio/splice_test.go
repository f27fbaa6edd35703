package stdio

import (
	"bytes"
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ReadSpliceable does not read a pipe holding at least minSplice bytes:
// it hands up to the n asked for over as a Pipe, and the stream stays
// locked (a second read waits) until the Pipe is closed. Less than
// minSplice is read as before, and Read never hands a pipe over.
func TestLargeOutputIsHandedOverAsPipe(t *testing.T) {
	s, w := pipesForTest(t, 256<<10)
	want := bytes.Repeat([]byte("wren"), 20<<10) // 80 KiB
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	data, pipe, err := s.ReadSpliceable(context.Background(), Stdout, 64<<10)
	if err != nil || data != nil || pipe == nil || pipe.Len() != 64<<10 {
		t.Fatalf("ReadSpliceable = %d bytes, pipe %v, %v; want the 64 KiB asked for left in the pipe", len(data), pipe, err)
	}
	// What the server would splice: the first n bytes of the output.
	buf := make([]byte, pipe.Len())
	if m, err := unix.Read(pipe.Fd(), buf); err != nil || !bytes.Equal(buf[:m], want[:pipe.Len()]) {
		t.Fatalf("the pipe's descriptor gave %d bytes (%v), want the stream's first %d", m, err, pipe.Len())
	}

	second := make(chan []byte)
	go func() {
		b, _ := s.Read(context.Background(), Stdout, MaxRead)
		second <- b
	}()
	select {
	case <-second:
		t.Fatal("a second read ran while the held bytes were being sent")
	case <-time.After(100 * time.Millisecond):
	}
	pipe.Close()
	if b := <-second; !bytes.Equal(b, want[64<<10:]) {
		t.Fatalf("the read after the reply returned %d bytes, want the remaining %d", len(b), len(want)-64<<10)
	}

	small := []byte("a short line\n")
	if _, err := w.Write(small); err != nil {
		t.Fatal(err)
	}
	if data, pipe, err := s.ReadSpliceable(context.Background(), Stdout, MaxRead); err != nil || pipe != nil || !bytes.Equal(data, small) {
		t.Fatalf("small output: %q, pipe %v, %v; want it read directly", data, pipe, err)
	}

	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Read(context.Background(), Stdout, MaxRead); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Read of 80 KiB: %d bytes, %v; want them read", len(got), err)
	}
}

// A read waiting for a stream whose held bytes are still being sent gives
// up when its context ends: a client that stops reading its connection
// must not pin other readers of the stream.
func TestReadBehindHeldBytesHonoursItsContext(t *testing.T) {
	s, w := pipesForTest(t, 256<<10)
	if _, err := w.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	_, pipe, err := s.ReadSpliceable(context.Background(), Stdout, MaxRead)
	if err != nil || pipe == nil {
		t.Fatalf("ReadSpliceable = pipe %v, %v; want the bytes held", pipe, err)
	}
	defer pipe.Close()
	waiting, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := s.Read(waiting, Stdout, MaxRead); err != context.DeadlineExceeded {
		t.Fatalf("read behind the held bytes: %v, want its context's DeadlineExceeded", err)
	}
}
