package initd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/hostvsock"
)

// Shells are tried in order for the debug console.
var Shells = []string{"/bin/bash", "/bin/sh"}

// FindShell returns the first shell of Shells under root that exists.
func FindShell(root string) (string, error) {
	for _, s := range Shells {
		if st, err := os.Stat(join(root, s)); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return s, nil
		}
	}
	return "", fmt.Errorf("no shell for the debug console (tried %v); build the image with --profile debug", Shells)
}

// RunFunc runs a started-to-be command to completion. The default is
// (*exec.Cmd).Run; an agent with a central reaper passes one that waits
// through it, so only one owner calls wait4.
type RunFunc func(*exec.Cmd) error

// DebugConsole serves a shell on a pty for every connection on a vsock
// port, or a shell on /dev/console (restarted when it exits) when Port is 0.
type DebugConsole struct {
	Port uint32
	Log  *slog.Logger
	// Run runs the shell; nil means (*exec.Cmd).Run.
	Run RunFunc
	// Listener overrides the vsock listener (tests use a Unix socket).
	Listener net.Listener
	// Shell overrides the search of Shells.
	Shell string
}

// Start starts the console in the background; it stops when ctx ends.
func (d *DebugConsole) Start(ctx context.Context) error {
	shell := d.Shell
	if shell == "" {
		var err error
		if shell, err = FindShell(""); err != nil {
			return err
		}
	}
	run := d.Run
	if run == nil {
		run = (*exec.Cmd).Run
	}
	if d.Port == 0 && d.Listener == nil {
		go d.consoleLoop(ctx, shell, run)
		return nil
	}
	ln := d.Listener
	if ln == nil {
		var err error
		// A shell for the host alone: from a container it is root in the
		// guest.
		if ln, err = hostvsock.Listen(hostvsock.AnyCID, d.Port, d.Log); err != nil {
			return fmt.Errorf("debug console: listen on vsock port %d: %w", d.Port, err)
		}
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		defer Recover(d.Log, "debug console")
		for {
			conn, err := ln.Accept()
			if err != nil {
				if ctx.Err() == nil {
					d.Log.Error("debug console accept", "err", err)
				}
				return
			}
			go func() {
				defer Recover(d.Log, "debug console session")
				if err := servePTY(ctx, conn, shell, run); err != nil {
					d.Log.Warn("debug console session", "err", err)
				}
			}()
		}
	}()
	d.Log.Info("debug console listening", "vport", d.Port)
	return nil
}

func (d *DebugConsole) consoleLoop(ctx context.Context, shell string, run RunFunc) {
	defer Recover(d.Log, "debug console")
	d.Log.Info("debug console on /dev/console", "shell", shell)
	for ctx.Err() == nil {
		tty, err := os.OpenFile("/dev/console", os.O_RDWR, 0)
		if err != nil {
			d.Log.Error("debug console: open /dev/console", "err", err)
			return
		}
		cmd := shellCmd(shell, tty)
		start := time.Now()
		err = run(cmd)
		tty.Close()
		d.Log.Info("debug console shell exited", "err", err)
		// A shell that dies at once must not spin.
		if time.Since(start) < time.Second {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func shellCmd(shell string, tty *os.File) *exec.Cmd {
	cmd := exec.Command(shell, "-i")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.Env = []string{"PATH=" + Path, "TERM=vt100", "HOME=/root"}
	cmd.Dir = "/"
	// A new session with the tty as controlling terminal (fd 0 in the child).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	return cmd
}

// openPTY returns a new pty pair from /dev/ptmx.
func openPTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("open pty %d: %w", n, err)
	}
	return m, s, nil
}

// servePTY runs shell on a fresh pty and copies between it and conn until
// the shell exits or the connection closes.
func servePTY(ctx context.Context, conn net.Conn, shell string, run RunFunc) error {
	defer conn.Close()
	master, slave, err := openPTY()
	if err != nil {
		return err
	}
	defer master.Close()
	cmd := shellCmd(shell, slave)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(conn, master) // ends with EIO once the shell and its children close the pty
		conn.Close()
	}()
	go func() {
		_, _ = io.Copy(master, conn)
		// The peer hung up: closing the master hangs up the pty, and the
		// kernel sends SIGHUP to the shell's session.
		master.Close()
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	err = run(cmd)
	slave.Close()
	wg.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return nil
	}
	return err
}
