package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/wren-vm/wren/agent/address"
	"github.com/wren-vm/wren/agent/hostvsock"
)

// Listen opens the listener for a server address (vsock:// or unix://). A
// vsock listener serves the host alone (see hostvsock); log receives the
// connections it refuses (nil: none are logged).
func Listen(addr string, log *slog.Logger) (net.Listener, error) {
	a, err := address.Parse(addr)
	if err != nil {
		return nil, err
	}
	switch a.Scheme {
	case address.Vsock:
		cid := uint32(a.CID)
		if a.CID == address.AnyCID {
			cid = hostvsock.AnyCID
		}
		ln, err := hostvsock.Listen(cid, a.Port, log)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		return ln, nil
	case address.Unix:
		if !a.Abstract {
			if err := removeStaleSocket(a.Path); err != nil {
				return nil, fmt.Errorf("listen on %s: %w", addr, err)
			}
		}
		ln, err := net.Listen("unix", a.UnixName())
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		return ln, nil
	}
	return nil, fmt.Errorf("listen on %s: the agent cannot listen on %s addresses", addr, a.Scheme)
}

// removeStaleSocket clears a socket left by an earlier run and makes the
// parent directory; it refuses to remove anything that is not a socket.
func removeStaleSocket(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	return os.Remove(path)
}
