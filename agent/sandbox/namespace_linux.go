package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

var errNotEmpty = syscall.ENOTEMPTY

// namespaces are the sandbox's persistent UTS and IPC namespaces, kept alive
// by bind mounts of their nsfs files so containers can join them by path.
type namespaces struct {
	uts, ipc string
}

func newNamespaces(dir, hostname string) (_ *namespaces, retErr error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ns := &namespaces{}
	defer func() {
		if retErr != nil {
			_ = ns.release() // best effort: the error being returned is the one to report
		}
	}()
	uts := filepath.Join(dir, "uts")
	if err := persistNamespace(unix.CLONE_NEWUTS, uts, hostname); err != nil {
		return nil, fmt.Errorf("uts namespace: %w", err)
	}
	ns.uts = uts
	ipc := filepath.Join(dir, "ipc")
	if err := persistNamespace(unix.CLONE_NEWIPC, ipc, ""); err != nil {
		return nil, fmt.Errorf("ipc namespace: %w", err)
	}
	ns.ipc = ipc
	return ns, nil
}

// persistNamespace unshares a namespace on a dedicated OS thread, sets the
// hostname in it (UTS), and bind-mounts the thread's namespace file at path.
// The thread is never unlocked, so the Go runtime discards it afterwards
// instead of reusing a thread that lives in a different namespace.
func persistNamespace(flag int, path, hostname string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			if err := unix.Unshare(flag); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			if flag == unix.CLONE_NEWUTS && hostname != "" {
				if err := unix.Sethostname([]byte(hostname)); err != nil {
					return fmt.Errorf("sethostname %q: %w", hostname, err)
				}
			}
			kind := "uts"
			if flag == unix.CLONE_NEWIPC {
				kind = "ipc"
			}
			src := fmt.Sprintf("/proc/%d/task/%d/ns/%s", os.Getpid(), unix.Gettid(), kind)
			if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind %s: %w", src, err)
			}
			return nil
		}()
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

func (ns *namespaces) release() error {
	var errs []error
	for _, p := range []string{ns.uts, ns.ipc} {
		if p == "" {
			continue
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	ns.uts, ns.ipc = "", ""
	return errors.Join(errs...)
}
