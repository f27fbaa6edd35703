package sandbox

import (
	"fmt"
	"os"
	"path"
	"runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
)

// SharedMount asks for the mount at SrcPath in container SrcCtr to appear
// at DstPath in container DstCtr (Kata's shared_mounts, declared with the
// io.katacontainers.config.runtime.shared_mounts annotation): a sidecar
// mounts storage, the application sees it, and neither the guest's mount
// namespace nor the host's holds the mount. Containers are named by their
// Kubernetes container name (criNameAnnotation) or their id.
type SharedMount struct {
	Name            string
	SrcCtr, SrcPath string
	DstCtr, DstPath string
}

// criNameAnnotation is the container's name as CRI runtimes annotate it.
const criNameAnnotation = "io.kubernetes.cri.container-name"

// named reports whether a container with this id and spec answers to name.
func named(name, id string, spec *specs.Spec) bool {
	return name == id || (spec != nil && spec.Annotations[criNameAnnotation] == name)
}

// checkSharedMounts refuses a shared mount that does not name both sides
// and absolute, clean paths.
func checkSharedMounts(mounts []SharedMount) error {
	for _, m := range mounts {
		if m.SrcCtr == "" || m.DstCtr == "" {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "shared mount %q: source and destination containers are required", m.Name)
		}
		for _, p := range []string{m.SrcPath, m.DstPath} {
			if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
				return errdefs.Errorf(errdefs.ErrInvalidArgument, "shared mount %q: path %q is not an absolute, clean path below /", m.Name, p)
			}
		}
	}
	return nil
}

// shareMountsInto gives the container just created (id, spec, its init at
// dstPid) the shared mounts whose destination it is. Each source must be a
// running container of the sandbox.
func (s *Sandbox) shareMountsInto(id string, spec *specs.Spec, dstPid int, mounts []SharedMount) error {
	for _, m := range mounts {
		if !named(m.DstCtr, id, spec) {
			continue
		}
		srcPid, err := s.initPidOf(m.SrcCtr)
		if err != nil {
			return fmt.Errorf("shared mount %q: %w", m.Name, err)
		}
		if err := moveMountBetween(srcPid, m.SrcPath, dstPid, m.DstPath); err != nil {
			return fmt.Errorf("shared mount %q from %s:%s to %s:%s: %w", m.Name, m.SrcCtr, m.SrcPath, id, m.DstPath, err)
		}
		s.log.Info("shared mount set up", "name", m.Name, "from", m.SrcCtr, "src", m.SrcPath, "to", id, "dst", m.DstPath)
	}
	return nil
}

// initPidOf finds the init of the created container named name.
func (s *Sandbox) initPidOf(name string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range s.containers {
		if e.c != nil && named(name, id, e.spec) {
			return e.c.InitPid(), nil
		}
	}
	return 0, errdefs.Errorf(errdefs.ErrFailedPrecondition, "no container %q in the sandbox to share a mount from", name)
}

// moveMountBetween clones the mount tree at srcPath in the mount namespace
// of process srcPid (open_tree) and attaches the clone at dstPath in the
// mount namespace of dstPid (move_mount), creating dstPath there if need
// be. It runs on a thread of its own that enters both namespaces and is
// never handed back to the Go runtime: the runtime ends it when the
// goroutine returns, so no other goroutine runs in those namespaces.
func moveMountBetween(srcPid int, srcPath string, dstPid int, dstPath string) error {
	// Both namespaces are opened first: once in the source's, /proc is
	// the container's and knows neither pid.
	srcNS, err := openMountNS(srcPid)
	if err != nil {
		return err
	}
	defer unix.Close(srcNS)
	dstNS, err := openMountNS(dstPid)
	if err != nil {
		return err
	}
	defer unix.Close(dstNS)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			// setns into a mount namespace needs the thread's own fs
			// state (root, cwd), not the process's.
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("unshare fs: %w", err)
			}
			if err := unix.Setns(srcNS, unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("enter the source's mount namespace: %w", err)
			}
			tree, err := unix.OpenTree(unix.AT_FDCWD, srcPath, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
			if err != nil {
				return errdefs.Mark(errdefs.ErrFailedPrecondition, fmt.Errorf("clone the mount at %s: %w", srcPath, err))
			}
			defer unix.Close(tree)
			if err := unix.Setns(dstNS, unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("enter the destination's mount namespace: %w", err)
			}
			if err := os.MkdirAll(dstPath, 0o755); err != nil {
				return fmt.Errorf("make %s: %w", dstPath, err)
			}
			if err := unix.MoveMount(tree, "", unix.AT_FDCWD, dstPath, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("attach at %s: %w", dstPath, err)
			}
			return nil
		}()
	}()
	return <-errc
}

// openMountNS opens the mount namespace of pid.
func openMountNS(pid int) (int, error) {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("mount namespace of %d: %w", pid, err)
	}
	return fd, nil
}
