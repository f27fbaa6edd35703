package policy

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// panicking is a policy engine whose evaluation panics. OPA's evaluator
// cannot be made to panic on demand, so this stands in for a bug in it;
// what the test checks, the recovery, is Policy's own.
type panicking struct{ onCompile bool }

func (e panicking) Compile(context.Context, string) (Compiled, error) {
	if e.onCompile {
		panic("compiler bug")
	}
	return e, nil
}

func (panicking) Eval(_ context.Context, entry string, _ any, _ bool) (any, bool, []string, error) {
	if entry == "AllowRequestsFailingPolicy" {
		return false, true, nil, nil
	}
	panic("evaluator bug")
}

func (panicking) Patch(context.Context, []any) error { return nil }

func TestEnginePanicIsAnInternalError(t *testing.T) {
	p := New(panicking{}, DefaultLimits, nil)
	ctx := context.Background()
	if err := p.Load(ctx, "anything"); err != nil {
		t.Fatal(err)
	}
	err := p.Check(ctx, &agentpb.StartContainerRequest{})
	if err == nil || errdefs.KindOf(err) != nil || !errors.Is(err, errEnginePanic) || !strings.Contains(err.Error(), "evaluator bug") {
		t.Errorf("%v, want an internal error naming the panic", err)
	}
	// A compiler that panics leaves the policy in force.
	p.engine = panicking{onCompile: true}
	if err := p.Load(ctx, "other"); err == nil || !errors.Is(err, errEnginePanic) {
		t.Errorf("Load with a panicking compiler: %v", err)
	}
	if p.cur.Load() == nil {
		t.Error("the policy in force was dropped")
	}
}

func TestNoPolicyRefusesEverything(t *testing.T) {
	err := New(panicking{}, DefaultLimits, nil).Check(context.Background(), &agentpb.CheckRequest{})
	if !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("%v, want PermissionDenied", err)
	}
}

// TestInputHasKatasShape: the JSON of Input is what serde_json writes for
// Kata's Rust structs; the fragments are from a CreateContainerRequest of
// genpolicy's test cases (tests/policy/testdata/createcontainer), and the
// rest follows Kata's serde_config.rs.
func TestInputHasKatasShape(t *testing.T) {
	req := &agentpb.CreateContainerRequest{
		ContainerId: "gid",
		OCI: &agentpb.Spec{
			Version: "1.1.0",
			Mounts:  []*agentpb.Mount{{Destination: "/proc", Source: "proc", Type: "proc", Options: []string{"nosuid"}}},
			Linux: &agentpb.Linux{
				Namespaces: []*agentpb.LinuxNamespace{{Type: "ipc"}},
				Seccomp:    &agentpb.LinuxSeccomp{Syscalls: []*agentpb.LinuxSyscall{{Names: []string{"x"}, ErrnoRet: &agentpb.LinuxSyscall_Errnoret{Errnoret: 1}}, {Names: []string{"y"}}}},
			},
		},
		Storages: []*agentpb.Storage{{Driver: "image_guest_pull", MountPoint: "/run/kata-containers/gid/rootfs"}},
	}
	in, err := Input(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{
		`"container_id":"gid"`, `"sandbox_pidns":false`, `"shared_mounts":[]`, `"string_user":null`, `"stdin_port":0`,
		`"Hooks":null`, `"Solaris":null`, `"Windows":null`, `"Hostname":""`, `"Annotations":{}`, `"Process":null`,
		`{"destination":"/proc","options":["nosuid"],"source":"proc","type_":"proc"}`,
		`{"Path":"","Type":"ipc"}`, `"Sysctl":{}`, `"IntelRdt":null`, `"Resources":null`,
		`"ErrnoRet":{"errnoret":1}`, `"ErrnoRet":null`,
		`{"driver":"image_guest_pull","driver_options":[],"fs_group":null,"fstype":"","mount_point":"/run/kata-containers/gid/rootfs","options":[],"shared":false,"source":""}`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("input lacks %s:\n%s", want, got)
		}
	}
	// Enums are numbers, bytes arrays of numbers, 64-bit integers numbers.
	in, _ = Input(&agentpb.ReseedRandomDevRequest{Data: []byte{1, 255}})
	if b, _ := json.Marshal(in); string(b) != `{"data":[1,255]}` {
		t.Errorf("bytes: %s", b)
	}
	in, _ = Input(&agentpb.SetGuestDateTimeRequest{Sec: 1 << 40, Usec: 7})
	if b, _ := json.Marshal(in); string(b) != `{"Sec":1099511627776,"Usec":7}` {
		t.Errorf("int64: %s", b)
	}
}

// TestCopyFileInputIsKatasPolicyCopyFileRequest: no data, the file type
// named, a symlink's target; a target that is not UTF-8 is refused.
func TestCopyFileInputIsKatasPolicyCopyFileRequest(t *testing.T) {
	in, err := Input(&agentpb.CopyFileRequest{Path: "/a/l", FileMode: 0o120777, Data: []byte("..data/x"), Uid: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(in)
	want := `{"dir_mode":0,"file_mode":41471,"file_size":0,"file_type":"Symlink","gid":0,"offset":0,"path":"/a/l","symlink_target":"..data/x","uid":1}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	in, _ = Input(&agentpb.CopyFileRequest{Path: "/a/f", FileMode: 0o100644, Data: []byte("secret")})
	if b, _ := json.Marshal(in); strings.Contains(string(b), "secret") || !strings.Contains(string(b), `"file_type":"Regular"`) || !strings.Contains(string(b), `"symlink_target":null`) {
		t.Errorf("regular file: %s", b)
	}
	if _, err := Input(&agentpb.CopyFileRequest{FileMode: 0o120777, Data: []byte{0xff, 0}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("non-UTF-8 symlink: %v", err)
	}
}
