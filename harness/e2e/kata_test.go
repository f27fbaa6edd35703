package e2e

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/harness/kata"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// testListInterfacesAndRoutes: the guest's interfaces and routes as Kata's
// agent lists them: every link, loopback included, and the main table.
func (p *pod) testListInterfacesAndRoutes(t *testing.T) {
	ctx, cancel := p.ctx()
	defer cancel()
	ifs, err := p.c.Agent.ListInterfaces(ctx, &agentpb.ListInterfacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs.GetInterfaces() {
		names = append(names, i.GetName())
	}
	if !slices.Contains(names, "lo") {
		t.Errorf("ListInterfaces in the pod VM: %q, want lo among them, as Kata's agent lists it", names)
	}
	if _, err := p.c.Agent.ListRoutes(ctx, &agentpb.ListRoutesRequest{}); err != nil {
		t.Errorf("ListRoutes: %v", err)
	}
}

// testStringUser: CreateContainer's string_user names the init's user by
// name, resolved in the container's own /etc/passwd inside the pod VM; an
// unknown name is InvalidArgument.
func (p *pod) testStringUser(t *testing.T) {
	c := p.newContainer(t, "stringuser", "/bin/sh", "-c", "id -u; id -g")
	ctx, cancel := p.ctx()
	defer cancel()
	bad := c.request()
	bad.StringUser = &agentpb.StringUser{Uid: "mallory"}
	if _, err := p.c.Agent.CreateContainer(ctx, bad); status.Code(unwrap(err)) != codes.InvalidArgument {
		t.Fatalf("string_user naming an unknown user: %v, want InvalidArgument", err)
	}
	c.stringUser = &agentpb.StringUser{Uid: "nobody"}
	out := p.run(t, c, nil)
	if out.stdout != "65534\n65534\n" {
		t.Errorf("a container as string_user nobody printed %q (stderr %q), want 65534 twice", out.stdout, out.stderr)
	}
}

// hooksDir is guest_hook_path's directory in the share.
const hooksDir = "hooks"

// installGuestHooks builds markhook into the share as the prestart,
// poststart and poststop hook and returns guest_hook_path as the guest
// sees it.
func (p *pod) installGuestHooks(t *testing.T) string {
	t.Helper()
	for _, kind := range []string{"prestart", "poststart", "poststop"} {
		bin := filepath.Join(p.vm.SharedDir, hooksDir, kind, "10-mark")
		build := exec.Command("go", "build", "-o", bin, "./testdata/markhook")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if p.goarch != "" {
			build.Env = append(build.Env, "GOARCH="+p.goarch)
		}
		if b, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build the hook: %v\n%s", err, b)
		}
	}
	return path.Join(kata.GuestSharedDir, hooksDir)
}

// testGuestHooks: the hooks below guest_hook_path run for every container
// with their name and kind as arguments (as Kata's agent runs them), and a
// prestart hook that fails fails the create, leaving the id free.
func (p *pod) testGuestHooks(t *testing.T) {
	c := p.newContainer(t, "hooked", "/bin/true")
	if out := p.run(t, c, nil); out.code != 0 {
		t.Fatalf("hooked container: %+v", out)
	}
	b, err := os.ReadFile(filepath.Join(p.vm.SharedDir, hooksDir, "marks", c.id))
	if want := "10-mark prestart\n10-mark poststart\n10-mark poststop\n"; err != nil || string(b) != want {
		t.Errorf("hooks ran as %q (%v), want %q", b, err, want)
	}
	failing := p.newContainer(t, "hookfail1", "/bin/true")
	ctx, cancel := p.ctx()
	defer cancel()
	for try := 0; try < 2; try++ {
		// The second try gets the hook's failure again, not AlreadyExists:
		// the failed create left nothing behind.
		_, err := p.c.Agent.CreateContainer(ctx, failing.request())
		if err == nil {
			t.Fatal("a failing prestart hook did not fail CreateContainer")
		}
		if status.Code(unwrap(err)) == codes.AlreadyExists {
			t.Fatalf("try %d: %v: the failed create left the container behind", try, err)
		}
	}
}

// testSharedMounts: a mount a sidecar makes inside itself appears in the
// application container that shared_mounts names (Kata's
// io.katacontainers.config.runtime.shared_mounts), matched by the CRI
// container names, inside the pod VM.
func (p *pod) testSharedMounts(t *testing.T) {
	side := p.newContainer(t, "sidecar", "/bin/sh", "-c", "echo from the sidecar > /mnt/storage/f; exec sleep 3600")
	side.spec.Mounts = append(side.spec.Mounts, specs.Mount{Destination: "/mnt/storage", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}})
	side.spec.Annotations = map[string]string{"io.kubernetes.cri.container-name": "sidecar"}
	p.startContainer(t, side)
	if out := p.exec(t, side.id, "ready", false, nil, "/bin/sh", "-c", "while [ ! -s /mnt/storage/f ]; do sleep 0.1; done; cat /mnt/storage/f"); out.stdout != "from the sidecar\n" {
		t.Fatalf("the sidecar's own mount: %+v", out)
	}
	app := p.newContainer(t, "app", "/bin/cat", "/data/f")
	app.spec.Annotations = map[string]string{"io.kubernetes.cri.container-name": "app"}
	app.sharedMounts = []*agentpb.SharedMount{{Name: "storage", SrcCtr: "sidecar", SrcPath: "/mnt/storage", DstCtr: "app", DstPath: "/data"}}
	if out := p.run(t, app, nil); out.stdout != "from the sidecar\n" {
		t.Errorf("the app container read %+v through the shared mount", out)
	}
}
