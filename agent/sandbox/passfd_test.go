package sandbox

import (
	"io"
	"os"
	"testing"
	"time"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/agent/passfd"
	"github.com/wren-vm/wren/agent/passfd/passfdtest"
)

// passfdEnv is an env whose sandbox takes passfd streams from a unix
// socket (passfdtest says why).
func passfdEnv(t *testing.T) (*env, string) {
	t.Helper()
	streams, sock := passfdtest.Serve(t)
	e := newBenchEnv(t, func(o *Options) { o.Passfd = streams })
	e.t = t
	return e, sock
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestPassfdStreamsAreTheContainersStdio: a real container writes its
// stdout and stderr straight into the host's connections.
func TestPassfdStreamsAreTheContainersStdio(t *testing.T) {
	e, sock := passfdEnv(t)
	e.createSandbox()
	out, errc := passfdtest.Dial(t, sock, 5001), passfdtest.Dial(t, sock, 5002)
	id := newID()
	cfg := ContainerConfig{ID: id, ExecID: id, Spec: ocispec.ToSpec(e.spec("/bin/sh", "-c", "echo to stdout; echo to stderr >&2")),
		Stdio: passfd.Ports{Stdout: 5001, Stderr: 5002}}
	if err := e.sb.CreateContainer(bg, cfg); err != nil {
		t.Fatal(err)
	}
	defer e.remove(id)
	if err := e.sb.StartContainer(bg, id); err != nil {
		t.Fatal(err)
	}
	gotOut, err := io.ReadAll(out)
	if err != nil {
		t.Fatal(err)
	}
	gotErr, err := io.ReadAll(errc)
	if err != nil {
		t.Fatal(err)
	}
	if code := e.wait(id, id); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if string(gotOut) != "to stdout\n" || string(gotErr) != "to stderr\n" {
		t.Fatalf("stdout %q, stderr %q", gotOut, gotErr)
	}
}

// TestPassfdMissingStreamLeavesNothing: a CreateContainer naming a stream
// that never comes is NotFound once the stream timeout passes; the stream
// that did come is closed (the host reads EOF), no descriptor stays open
// and no container exists.
func TestPassfdMissingStreamLeavesNothing(t *testing.T) {
	e, sock := passfdEnv(t)
	e.createSandbox()
	fds := openFDs(t)
	in := passfdtest.Dial(t, sock, 5003)
	id := newID()
	cfg := ContainerConfig{ID: id, ExecID: id, Spec: ocispec.ToSpec(e.spec("/bin/cat")),
		Stdio: passfd.Ports{Stdin: 5003, Stdout: 5004}}
	wantKind(t, "CreateContainer without its stdout stream", e.sb.CreateContainer(bg, cfg), errdefs.ErrNotFound)
	// A stream left open would block this read: the deadline turns that
	// into a failure.
	if err := in.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := in.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the host's stdin stream: read %d, %v; want EOF (closed by the agent)", n, err)
	}
	in.Close()
	if got := openFDs(t); got != fds {
		t.Errorf("%d descriptors open after the failed create, %d before", got, fds)
	}
	wantKind(t, "StartContainer after the failed create", e.sb.StartContainer(bg, id), errdefs.ErrNotFound)
}
