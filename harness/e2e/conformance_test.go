package e2e

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/harness/kata"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// Guest directories of the storages the Kata runtime makes for a pod's
// emptyDir volumes (virtcontainers handleEphemeralStorage and
// handleLocalStorage): memory-backed ones are tmpfs below ephemeral,
// disk-backed ones directories below the sandbox's rootfs in the share.
const (
	guestEphemeralDir = "/run/kata-containers/sandbox/ephemeral"
	localDirOptions   = "mode=0777"
)

// conformanceRow is one request shape the Kata runtime sends with
// CreateContainer and what it must leave in the container, as a shell
// line run inside it and the output it must print (docs/kata-conformance.md
// lists the rows).
type conformanceRow struct {
	name  string
	shape func(c *container) []*agentpb.Storage
	check string
	want  string
}

// testConformance runs a container per row of the CreateContainer shapes
// that no other TestPodVM subtest covers, each sent as Kata's runtime
// builds it, and checks the result from inside the container in the pod
// VM.
func (p *pod) testConformance(t *testing.T) {
	for _, row := range []conformanceRow{
		{
			name: "ephemeral storage",
			shape: func(c *container) []*agentpb.Storage {
				src := path.Join(guestEphemeralDir, "cache")
				c.spec.Mounts = append(c.spec.Mounts, specs.Mount{Destination: "/cache", Type: "bind", Source: src, Options: []string{"rbind"}})
				return []*agentpb.Storage{{Driver: "ephemeral", Source: "tmpfs", Fstype: "tmpfs", MountPoint: src}}
			},
			check: "stat -f -c %T /cache; echo x > /cache/f && cat /cache/f",
			want:  "tmpfs\nx\n",
		},
		{
			name: "local storage",
			shape: func(c *container) []*agentpb.Storage {
				src := path.Join(kata.GuestSharedDir, "e2e-pod", "rootfs", "local", "scratch")
				c.spec.Mounts = append(c.spec.Mounts, specs.Mount{Destination: "/scratch", Type: "bind", Source: src, Options: []string{"rbind"}})
				return []*agentpb.Storage{{Driver: "local", Source: "local", Fstype: "local", MountPoint: src, Options: []string{localDirOptions}}}
			},
			check: "stat -c %a /scratch",
			want:  "777\n",
		},
		{
			name: "sysctls",
			shape: func(c *container) []*agentpb.Storage {
				c.spec.Linux.Sysctl = map[string]string{"kernel.shm_rmid_forced": "1"}
				return nil
			},
			check: "cat /proc/sys/kernel/shm_rmid_forced",
			want:  "1\n",
		},
		{
			name: "rlimits",
			shape: func(c *container) []*agentpb.Storage {
				c.spec.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1000, Soft: 900}}
				return nil
			},
			check: "ulimit -n; ulimit -Hn",
			want:  "900\n1000\n",
		},
		{
			name: "numeric user and groups",
			shape: func(c *container) []*agentpb.Storage {
				c.spec.Process.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 20}}
				return nil
			},
			check: "id -u; id -g; id -G",
			want:  "1000\n1000\n1000 10 20\n",
		},
		{
			name: "seccomp",
			shape: func(c *container) []*agentpb.Storage {
				errno := uint(1) // EPERM
				c.spec.Linux.Seccomp = &specs.LinuxSeccomp{
					DefaultAction: specs.ActAllow,
					Architectures: []specs.Arch{specs.ArchX86_64},
					Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &errno}},
				}
				return nil
			},
			check: "mkdir /tmp/d 2>/dev/null && echo made || echo refused",
			want:  "refused\n",
		},
		{
			name: "/etc/hosts from the share",
			shape: func(c *container) []*agentpb.Storage {
				// The runtime copies the pod's hosts file into the share and
				// binds it read-only over the container's.
				name := c.id + "-hosts"
				if err := os.WriteFile(filepath.Join(p.vm.SharedDir, name), []byte("192.0.2.7 wren-e2e-peer\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				c.spec.Mounts = append(c.spec.Mounts, specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: path.Join(kata.GuestSharedDir, name), Options: []string{"rbind", "ro"}})
				return nil
			},
			check: "cat /etc/hosts; echo y >> /etc/hosts 2>/dev/null && echo wrote || echo read-only",
			want:  "192.0.2.7 wren-e2e-peer\nread-only\n",
		},
	} {
		t.Run(strings.NewReplacer(" ", "_", "/", "").Replace(row.name), func(t *testing.T) {
			id := "conf-" + strings.NewReplacer(" ", "-", "/", "").Replace(row.name)
			c := p.newContainer(t, id, "/bin/sh", "-c", row.check)
			storages := row.shape(c)
			out := p.run(t, c, nil, storages...)
			if out.stdout != row.want || out.code != 0 {
				t.Errorf("%s: printed %q (stderr %q, exit %d), want %q", row.name, out.stdout, out.stderr, out.code, row.want)
			}
		})
	}
}

// hotplugBlock attaches file to the pod VM as a virtio-blk disk, as the
// Kata runtime hot-plugs one, and returns the PCI path it names it by.
func (p *pod) hotplugBlock(t *testing.T, id, file string, readOnly bool) string {
	t.Helper()
	ctx, cancel := p.ctx()
	defer cancel()
	q, err := p.vm.QMPDial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	pciPath, err := p.vm.HotplugBlock(ctx, q, id, file, readOnly)
	if err != nil {
		t.Fatal(err)
	}
	return pciPath
}

// testBlockRootfs: a container whose root filesystem is a hot-plugged
// disk, as the Kata runtime sends a block-based rootfs: a blk storage
// mounted at the container's directory in the share, and the spec's root
// its rootfs directory.
func (p *pod) testBlockRootfs(t *testing.T) {
	const id = "blockroot"
	src := t.TempDir()
	testbundle.RootfsWith(t, filepath.Join(src, "rootfs"), p.busybox)
	if err := os.WriteFile(filepath.Join(src, "rootfs", "marker"), []byte("on the disk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "root.ext4")
	if b, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-d", src, disk, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v: %s", err, b)
	}
	pciPath := p.hotplugBlock(t, "e2eroot", disk, false)
	parent := path.Join(kata.GuestSharedDir, id)
	spec := testbundle.Spec(path.Join(parent, "rootfs"), "/bin/sh", "-c", "cat /marker; stat -f -c %T /")
	spec.Hostname = ""
	spec.Linux.CgroupsPath = "/e2e/" + id
	c := &container{id: id, spec: spec, sandboxPidns: kata.ShapeSpec(spec)}
	out := p.run(t, c, nil, &agentpb.Storage{Driver: "blk", Source: pciPath, Fstype: "ext4", MountPoint: parent})
	if out.stdout != "on the disk\next2/ext3\n" {
		t.Errorf("a container on a block rootfs printed %q (stderr %q)", out.stdout, out.stderr)
	}
}

// testDevices: a raw block device passed to a container as the Kata
// runtime passes one (a volumeDevice): in CreateContainer's devices by the
// PCI path of the hot-plugged disk, and in the spec's linux.devices with
// the host's numbers, which the agent rewrites to the guest's.
func (p *pod) testDevices(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "raw.img")
	if err := os.WriteFile(disk, append([]byte("raw block data\n"), make([]byte, 1<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	pciPath := p.hotplugBlock(t, "e2eraw", disk, true)
	ctx, cancel := p.ctx()
	defer cancel()
	c := p.newContainer(t, "rawdev", "/bin/sh", "-c", "head -c 15 /dev/xvdb")
	// The host's numbers of the device, which mean nothing in the guest.
	major, minor := int64(259), int64(7)
	fileMode := os.FileMode(0o660)
	c.spec.Linux.Devices = append(c.spec.Linux.Devices, specs.LinuxDevice{Path: "/dev/xvdb", Type: "b", Major: major, Minor: minor, FileMode: &fileMode})
	c.spec.Linux.Resources.Devices = append(c.spec.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "b", Major: &major, Minor: &minor, Access: "r"})
	req := c.request()
	req.Devices = []*agentpb.Device{{Id: pciPath, Type: "blk", ContainerPath: "/dev/xvdb"}}
	if _, err := p.c.Agent.CreateContainer(ctx, req); err != nil {
		t.Fatalf("CreateContainer with a device: %v", err)
	}
	defer func() {
		if _, err := p.c.Agent.RemoveContainer(ctx, &agentpb.RemoveContainerRequest{ContainerId: c.id, Timeout: 30}); err != nil {
			t.Errorf("RemoveContainer: %v", err)
		}
	}()
	stdout := p.reader(ctx, c.id, c.id, p.c.Agent.ReadStdout)
	stderr := p.reader(ctx, c.id, c.id, p.c.Agent.ReadStderr)
	if _, err := p.c.Agent.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: c.id}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Agent.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: c.id, ExecId: c.id}); err != nil {
		t.Fatal(err)
	}
	if out, errOut := <-stdout, <-stderr; out != "raw block data\n" {
		t.Errorf("read %q from /dev/xvdb (stderr %q), want the disk's first bytes", out, errOut)
	}
}
