package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// EchoSize is the message the raw echo bounces: about the size of a ttrpc
// Health.Check request frame (10-byte header, service and method names).
const EchoSize = 40

// ServeEcho answers every EchoSize-byte message on the unix socket at path
// with the same bytes, one connection at a time, until the process ends.
func ServeEcho(path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		buf := make([]byte, EchoSize)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				break
			}
			if _, err := c.Write(buf); err != nil {
				break
			}
		}
		c.Close()
	}
}

// ServeCopy writes total bytes in chunk-sized writes to each connection on
// the unix socket at path, then closes it.
func ServeCopy(path string, total int64, chunk int) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	buf := make([]byte, chunk)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		for left := total; left > 0; {
			n := int64(len(buf))
			if left < n {
				n = left
			}
			if _, err := c.Write(buf[:n]); err != nil {
				break
			}
			left -= n
		}
		c.Close()
	}
}

// Helper is a child process of the benchmark binary (an echo or copy
// server) listening on a unix socket.
type Helper struct {
	Path string
	cmd  *exec.Cmd
}

// StartHelper re-executes this binary with args plus the socket path and
// waits for the socket to accept.
func StartHelper(dir string, args ...string) (*Helper, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp(dir, "raw-")
	if err != nil {
		return nil, err
	}
	h := &Helper{Path: filepath.Join(d, "raw.sock")}
	h.cmd = exec.Command(self, append(args, h.Path)...)
	h.cmd.Stderr = os.Stderr
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("unix", h.Path); err == nil {
			c.Close()
			return h, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.Stop()
	return nil, errors.New("helper did not listen within 5 s")
}

// Stop kills the helper.
func (h *Helper) Stop() {
	_ = h.cmd.Process.Kill() // it may have exited already
	_ = h.cmd.Wait()         // killed: its status is no news
}

// HelperArgs builds the arguments of a copy helper.
func CopyHelperArgs(total int64, chunk int) []string {
	return []string{"copy-server", strconv.FormatInt(total, 10), strconv.Itoa(chunk)}
}

// RunHelper runs the helper subcommand named by args[0] (what StartHelper
// passes); the wren-bench main calls it.
func RunHelper(args []string) error {
	switch {
	case len(args) == 2 && args[0] == "echo-server":
		return ServeEcho(args[1])
	case len(args) == 4 && args[0] == "copy-server":
		total, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil {
			return err
		}
		chunk, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		return ServeCopy(args[3], total, chunk)
	}
	return fmt.Errorf("unknown helper %v", args)
}
