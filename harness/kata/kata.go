// Package kata builds the agent requests a Kata Containers shim sends for a
// pod whose container root filesystems travel through the virtio-fs share:
// the sandbox storage that mounts the share in the guest, and the guest
// paths of container root filesystems placed in the host side of it.
package kata

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/lib/fsremove"
	"github.com/wren-vm/wren/protocols/agentpb"
)

const (
	// SharedTag is the virtio-fs tag of the sandbox share.
	SharedTag = "kataShared"
	// GuestSharedDir is where the agent mounts the share
	// (kataGuestSharedDir in the Kata runtime).
	GuestSharedDir = "/run/kata-containers/shared/containers"
)

// SharedStorage is the CreateSandbox storage that mounts the virtio-fs
// share at GuestSharedDir, as the Kata runtime sends it.
func SharedStorage() *agentpb.Storage {
	return &agentpb.Storage{
		Driver:     "virtio-fs",
		Source:     SharedTag,
		Fstype:     "virtiofs",
		MountPoint: GuestSharedDir,
	}
}

// validID is what the agent accepts as a container id; checked here too so
// an id never names a path outside the share.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// GuestRootfs is the OCI root path, as the guest sees it, of the root
// filesystem in share directory name (Kata: the container id).
func GuestRootfs(name string) string { return path.Join(GuestSharedDir, name, "rootfs") }

// HostRootfs is where the root filesystem of share directory name (Kata:
// the container id) goes in the host side of the share.
func HostRootfs(sharedDir, name string) string { return filepath.Join(sharedDir, name, "rootfs") }

// ShareRootfs places a copy of rootfs into the share as <cid>-<random>/rootfs
// and returns its guest path and a function that removes it again. Kata
// bind-mounts instead; a copy cannot outlive a killed caller as a mount
// would, and busybox-sized root filesystems copy in milliseconds.
//
// The directory is new on every call. The guest's virtio-fs keeps looked-up
// entries for about a second (cache=auto), so a rootfs removed and placed
// again under the same name within that time resolves in the guest to the
// removed one (an empty, deleted directory): the container then fails with
// "wandered into deleted directory" or a missing /dev/null. Kata never
// reuses a container id that fast; running one bundle twice in a row does.
func ShareRootfs(sharedDir, cid, rootfs string) (guestPath string, remove func() error, err error) {
	if !validID.MatchString(cid) {
		return "", nil, fmt.Errorf("container id %q: want letters, digits, '_', '.', '-'", cid)
	}
	// A rootfs that is a symlink works for an agent on this host, which
	// follows it; cp -a would copy the link itself, dangling in the guest.
	rootfs, err = filepath.EvalSymlinks(rootfs)
	if err != nil {
		return "", nil, fmt.Errorf("rootfs: %w", err)
	}
	if st, err := os.Stat(rootfs); err != nil {
		return "", nil, fmt.Errorf("rootfs: %w", err)
	} else if !st.IsDir() {
		return "", nil, fmt.Errorf("rootfs %s: not a directory", rootfs)
	}
	if err := os.MkdirAll(sharedDir, 0o755); err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp(sharedDir, cid+"-")
	if err != nil {
		return "", nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.Remove(dir)
		return "", nil, err
	}
	remove = func() error { return fsremove.All(dir) }
	// cp -a keeps modes, owners, links and device nodes; --reflink=auto
	// makes it nearly free on filesystems that can share extents.
	name := filepath.Base(dir)
	out, err := exec.Command("cp", "-a", "--reflink=auto", rootfs, HostRootfs(sharedDir, name)).CombinedOutput()
	if err != nil {
		_ = remove() // the copy's error is the one to report
		return "", nil, fmt.Errorf("copy rootfs into the share: %v: %s", err, out)
	}
	return GuestRootfs(name), remove, nil
}

// StripPIDNamespace shapes a spec's namespaces as the Kata runtime does
// before CreateContainer (virtcontainers handlePidNamespace): it removes the
// pid namespace and reports whether the container asked to share one (the
// entry had a path), which the shim sends as sandbox_pidns. The agent must
// then give the container a pid namespace itself.
func StripPIDNamespace(spec *specs.Spec) (sandboxPidns bool) {
	if spec.Linux == nil {
		return false
	}
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			spec.Linux.Namespaces = append(spec.Linux.Namespaces[:i:i], spec.Linux.Namespaces[i+1:]...)
			return ns.Path != ""
		}
	}
	return false
}

// ShapeSpec shapes a spec as the Kata runtime does before CreateContainer
// and returns the sandbox_pidns it sends with it: the pid namespace goes
// (StripPIDNamespace, handlePidNamespace in virtcontainers), then the
// network and cgroup namespaces (the containers share the pod VM's
// network) and every other namespace's path (constrainGRPCSpec).
func ShapeSpec(spec *specs.Spec) (sandboxPidns bool) {
	sandboxPidns = StripPIDNamespace(spec)
	if spec.Linux == nil {
		return sandboxPidns
	}
	var kept []specs.LinuxNamespace
	for _, ns := range spec.Linux.Namespaces {
		switch ns.Type {
		case specs.NetworkNamespace, specs.CgroupNamespace:
		default:
			ns.Path = ""
			kept = append(kept, ns)
		}
	}
	spec.Linux.Namespaces = kept
	return sandboxPidns
}
