// Package kata builds the agent requests a Kata Containers shim sends for a
// pod whose container root filesystems travel through the virtio-fs share:
// the sandbox storage that mounts the share in the guest, and the guest
// paths of container root filesystems placed in the host side of it.
package kata

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"

	"github.com/wren-vm/wren/agent/fsremove"
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

// GuestRootfs is the OCI root path of container cid in the guest.
func GuestRootfs(cid string) string { return path.Join(GuestSharedDir, cid, "rootfs") }

// HostRootfs is where container cid's root filesystem goes in the host
// side of the share.
func HostRootfs(sharedDir, cid string) string { return filepath.Join(sharedDir, cid, "rootfs") }

// ShareRootfs places a copy of rootfs into the share as <cid>/rootfs and
// returns its guest path and a function that removes it again. Kata
// bind-mounts instead; a copy cannot outlive a killed caller as a mount
// would, and busybox-sized root filesystems copy in milliseconds.
func ShareRootfs(sharedDir, cid, rootfs string) (guestPath string, remove func() error, err error) {
	if !validID.MatchString(cid) {
		return "", nil, fmt.Errorf("container id %q: want letters, digits, '_', '.', '-'", cid)
	}
	if st, err := os.Stat(rootfs); err != nil {
		return "", nil, fmt.Errorf("rootfs: %w", err)
	} else if !st.IsDir() {
		return "", nil, fmt.Errorf("rootfs %s: not a directory", rootfs)
	}
	dir := filepath.Join(sharedDir, cid)
	if _, err := os.Lstat(dir); err == nil {
		return "", nil, fmt.Errorf("%s already exists in the shared directory", cid)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	remove = func() error { return fsremove.All(dir) }
	// cp -a keeps modes, owners, links and device nodes; --reflink=auto
	// makes it nearly free on filesystems that can share extents.
	out, err := exec.Command("cp", "-a", "--reflink=auto", rootfs, HostRootfs(sharedDir, cid)).CombinedOutput()
	if err != nil {
		remove()
		return "", nil, fmt.Errorf("copy rootfs into the share: %v: %s", err, out)
	}
	return GuestRootfs(cid), remove, nil
}
