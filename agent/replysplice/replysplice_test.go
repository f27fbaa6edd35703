package replysplice

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// pipeHolding returns the read end of a pipe that holds data.
func pipeHolding(t *testing.T, data []byte) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	return r
}

func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// A Pipe reads through a descriptor of its own, which outlives the
// caller's; Close closes it and runs the release once, however often it
// is called.
func TestPipeOwnsADuplicateAndReleasesOnce(t *testing.T) {
	r := pipeHolding(t, []byte("held bytes"))
	released := 0
	p, err := Hold(int(r.Fd()), 4, func() { released++ })
	if err != nil {
		t.Fatal(err)
	}
	if p.Fd() == int(r.Fd()) || p.Len() != 4 {
		t.Fatalf("pipe fd %d (caller's %d), len %d; want a duplicate holding 4", p.Fd(), r.Fd(), p.Len())
	}
	r.Close()
	b, err := p.readAll()
	if err != nil || string(b) != "held" {
		t.Fatalf("read %q, %v through the duplicate after the caller closed its own", b, err)
	}
	fd := p.Fd()
	p.Close()
	p.Close()
	if released != 1 || isOpen(fd) {
		t.Errorf("released %d times, duplicate open %v; want once and closed", released, isOpen(fd))
	}
}

// Nothing to hold, or no descriptor to duplicate: an error, and the
// release never runs (the caller reads the data itself).
func TestHoldFailsWithoutRunningRelease(t *testing.T) {
	r := pipeHolding(t, []byte("x"))
	released := false
	release := func() { released = true }
	if _, err := Hold(int(r.Fd()), 0, release); err == nil {
		t.Error("held 0 bytes")
	}
	if _, err := Hold(-1, 1, release); err == nil {
		t.Error("held bytes of descriptor -1")
	}
	if released {
		t.Error("release ran after a failed Hold")
	}
}

// The spliced field must be a singular bytes field of the message that the
// message leaves unset; the reply names it, and the server learns its
// number from the descriptor.
func TestReplyFieldIsChecked(t *testing.T) {
	held := func() *Pipe {
		p, err := Hold(int(pipeHolding(t, []byte("x")).Fd()), 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	if n, err := (&Reply{Message: &wrapperspb.BytesValue{}, Field: "value", Data: held()}).Number(); n != 1 || err != nil {
		t.Errorf("BytesValue.value: number %d, %v; want 1", n, err)
	}
	for _, tc := range []struct {
		name  string
		reply *Reply
		want  string
	}{
		{"no such field", &Reply{Message: &wrapperspb.BytesValue{}, Field: "data", Data: held()}, "no field"},
		{"not bytes", &Reply{Message: &wrapperspb.StringValue{}, Field: "value", Data: held()}, "not a singular bytes field"},
		{"already set", &Reply{Message: &wrapperspb.BytesValue{Value: []byte("y")}, Field: "value", Data: held()}, "is set"},
		{"no data", &Reply{Message: &wrapperspb.BytesValue{}, Field: "value"}, "without a message or data"},
		{"no message", &Reply{Field: "value", Data: held()}, "without a message or data"},
	} {
		if _, err := tc.reply.Number(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
		if _, err := tc.reply.ReadIn(); err == nil {
			t.Errorf("%s: ReadIn accepted the reply", tc.name)
		}
	}
}

// ReadIn turns a reply into the whole message a server that cannot splice
// sends, reading exactly the held bytes.
func TestReadInFillsTheField(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 5000) // within a pipe's default 64 KiB
	r := pipeHolding(t, data)
	p, err := Hold(int(r.Fd()), 30000, nil)
	if err != nil {
		t.Fatal(err)
	}
	reply := &Reply{Message: &wrapperspb.BytesValue{}, Field: "value", Data: p}
	defer reply.Close()
	m, err := reply.ReadIn()
	if err != nil {
		t.Fatal(err)
	}
	if want := (&wrapperspb.BytesValue{Value: data[:30000]}); !proto.Equal(m, want) {
		t.Errorf("ReadIn gave %d bytes, want the first 30000 held", len(m.(*wrapperspb.BytesValue).GetValue()))
	}
	rest := make([]byte, len(data))
	if n, _ := r.Read(rest); !bytes.Equal(rest[:n], data[30000:]) {
		t.Errorf("the pipe holds %d bytes after ReadIn, want the %d not held", n, len(data)-30000)
	}
}
