package storage

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/wren-vm/wren/agent/errdefs"
)

// Where storages may be mounted. Kata's runtime puts every storage in a
// few directories below the state root (kata_agent.go, fs_share_linux.go):
//
//	<state>/shared/containers          the shared filesystem (virtio-fs, 9p)
//	<state>/shared                     virtio-fs in nydus mode
//	<state>/shared/containers/...      block and nydus root filesystems
//	                                   (<cid>/rootfs), local volumes in the
//	                                   sandbox's rootfs (<sid>/rootfs/local/
//	                                   <name>), watchable-bind copies
//	                                   (watchable/<name>)
//	<state>/sandbox/shm                the sandbox's /dev/shm
//	<state>/sandbox/ephemeral/<name>   emptyDir tmpfs and hugetlbfs volumes
//	<state>/sandbox/local/<name>       local volumes
//	<state>/sandbox/storage/<name>     block volumes
//	<state>/sandbox/layers/<name>      image layers
//
// Nothing else is accepted: not the state root itself, not the agent's
// own state there (the sandbox directory and its DNS file, container
// bundles <state>/<cid>, libcontainer's state, the namespace files), not
// the directories that hold the volumes, and the shared directory itself
// only for the shared filesystem. The watcher's tmpfs and what is below it
// belong to watchable-bind. A storage anywhere else would cover or chmod
// guest directories (/etc, /sbin) or the agent's state.

// sandboxVolumeDirs hold one volume per entry, below <state>/sandbox.
var sandboxVolumeDirs = []string{"ephemeral", "local", "storage", "layers"}

// checkMountPoint reports why a storage of driver may not be mounted at mp
// (clean and absolute), as InvalidArgument; nil when it may.
func (m *Manager) checkMountPoint(driver, mp string) error {
	root := m.stateRoot
	shared := SharedDir(root)
	watch := m.watch.dir
	refuse := func(why string) error {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "storage mount point %s %s", mp, why)
	}
	if !within(root, mp) {
		return refuse(fmt.Sprintf("is not below the state root %s", root))
	}
	switch {
	case mp == shared:
		if driver != DriverVirtioFS && driver != Driver9P {
			return refuse("is the shared directory, which only the shared filesystem (virtio-fs, 9p) may be mounted on")
		}
		return nil
	case mp == filepath.Dir(shared):
		if driver != DriverVirtioFS {
			return refuse("is the parent of the shared directory, which only virtio-fs (nydus) may be mounted on")
		}
		return nil
	case mp == watch || within(watch, mp):
		if driver != DriverWatchableBind || mp == watch {
			return refuse(fmt.Sprintf("is in the watchable-bind tmpfs %s", watch))
		}
		return nil
	case within(shared, mp):
		return nil
	case mp == filepath.Join(root, "sandbox", "shm"):
		return nil
	}
	for _, d := range sandboxVolumeDirs {
		if within(filepath.Join(root, "sandbox", d), mp) {
			return nil
		}
	}
	return refuse(fmt.Sprintf("is not in a directory Kata uses for storages (%s, %s/sandbox/shm, %s/sandbox/{%s}/<name>)",
		shared, root, root, strings.Join(sandboxVolumeDirs, ",")))
}
