package sandbox

import (
	"testing"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/agent/passfd"
	pb "github.com/wren-vm/wren/protocols/agentpb"
)

// BenchmarkRunToExit measures CreateContainer + StartContainer +
// WaitProcess + RemoveContainer of /bin/true (busybox, runc's default spec).
func BenchmarkRunToExit(b *testing.B) {
	e := newBenchEnv(b)
	for b.Loop() {
		id := newID()
		if err := e.sb.CreateContainer(bg, ContainerConfig{ID: id, Spec: ocispec.ToSpec(e.spec("/bin/true"))}); err != nil {
			b.Fatal(err)
		}
		if err := e.sb.StartContainer(bg, id); err != nil {
			b.Fatal(err)
		}
		if _, err := e.sb.WaitProcess(bg, id, ""); err != nil {
			b.Fatal(err)
		}
		if err := e.sb.RemoveContainer(bg, id, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExec measures ExecProcess + WaitProcess of /bin/true in a
// running container.
func BenchmarkExec(b *testing.B) {
	e := newBenchEnv(b)
	id := newID()
	if err := e.sb.CreateContainer(bg, ContainerConfig{ID: id, Spec: ocispec.ToSpec(e.spec("/bin/sleep", "1000"))}); err != nil {
		b.Fatal(err)
	}
	if err := e.sb.StartContainer(bg, id); err != nil {
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		n++
		execID := "e" + newID()
		if err := e.sb.ExecProcess(bg, id, execID, ocispec.ToProcess(&pb.Process{Args: []string{"/bin/true"}, Cwd: "/", User: &pb.User{}}), nil, passfd.Ports{}); err != nil {
			b.Fatal(err)
		}
		if _, err := e.sb.WaitProcess(bg, id, execID); err != nil {
			b.Fatal(err)
		}
	}
}
