package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is one helper process of a VM (QEMU, virtiofsd, wren-vsockd), named
// by its pid and its start time so that a recorded pid that the kernel has
// since reused for another program is never signalled.
type Proc struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // field 22 of /proc/PID/stat, clock ticks since boot

	cmd    *exec.Cmd     // set in the process that started it
	exited chan struct{} // closed when cmd.Wait returns
	err    error         // cmd.Wait's result, valid after exited
}

// startProc starts a helper. Detached helpers get their own session so
// they outlive the caller (wrenctl vm up); attached ones die with the
// caller's thread (Pdeathsig) so a crashed test leaves nothing behind.
func startProc(name, path string, args []string, logPath string, detach bool) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer devnull.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if !detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, PID: cmd.Process.Pid, cmd: cmd, exited: make(chan struct{})}
	p.Start, _ = procStartTime(p.PID)
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// procStartTime reads a process's start time from /proc/PID/stat.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// after it are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, os.ErrNotExist
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Running reports whether the process still runs (a zombie does not).
func (p *Proc) Running() bool {
	if p.exited != nil {
		select {
		case <-p.exited:
			return false
		default:
			return true
		}
	}
	st, err := procStartTime(p.PID)
	return err == nil && st == p.Start
}

// Exited returns a channel closed when the process has exited. For a
// process this one did not start, it polls.
func (p *Proc) Exited() <-chan struct{} {
	if p.exited != nil {
		return p.exited
	}
	ch := make(chan struct{})
	go func() {
		for p.Running() {
			time.Sleep(20 * time.Millisecond)
		}
		close(ch)
	}()
	return ch
}

// signal sends sig if the recorded process is still the one running.
func (p *Proc) signal(sig syscall.Signal) error {
	if !p.Running() {
		return nil
	}
	err := syscall.Kill(p.PID, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Stop asks the process to end (SIGTERM), waits up to grace, then kills it.
func (p *Proc) Stop(grace time.Duration) error {
	if err := p.signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop %s (pid %d): %w", p.Name, p.PID, err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.Exited():
		return nil
	case <-t.C:
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s (pid %d): %w", p.Name, p.PID, err)
	}
	select {
	case <-p.Exited():
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID)
	}
}

// waitListening waits until a Unix socket at path is listening (as the
// kernel reports in /proc/net/unix), without connecting: QEMU's vhost-user
// peers serve the first connection as the VM, so a probe would steal it.
// It fails early when p exits.
func waitListening(ctx context.Context, p *Proc, path string) error {
	for {
		ok, err := unixListening(path)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited before listening on %s", p.Name, path)
		case <-ctx.Done():
			return fmt.Errorf("%s not listening on %s: %w", p.Name, path, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// soAcceptCon is __SO_ACCEPTCON, the flag /proc/net/unix shows for a
// listening socket.
const soAcceptCon = 0x10000

func unixListening(path string) (bool, error) {
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[7] != path {
			continue
		}
		flags, err := strconv.ParseUint(fields[3], 16, 32)
		if err == nil && flags&soAcceptCon != 0 {
			return true, nil
		}
	}
	return false, sc.Err()
}
