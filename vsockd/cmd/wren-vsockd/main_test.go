package main

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The binary as the QEMU launcher uses it: READY only once both sockets
// listen, a vhost-user frontend is served, SIGTERM exits cleanly and removes
// the sockets.
func TestBinaryLifecycle(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "wren-vsockd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	vu, uds := filepath.Join(dir, "vu.sock"), filepath.Join(dir, "v.sock")
	// A stale socket file from a previous run is replaced.
	if ln, err := net.Listen("unix", vu); err == nil {
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
	}
	cmd := exec.Command(bin, "--socket", vu, "--uds-path", uds, "--guest-cid", "7")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "READY\n" {
		t.Fatalf("first stdout line %q (%v), want READY", line, err)
	}
	c, err := net.Dial("unix", vu)
	if err != nil {
		t.Fatalf("vhost-user socket not listening after READY: %v", err)
	}
	// GET_CONFIG: the CID from the command line.
	req := make([]byte, 12+12+8)
	binary.LittleEndian.PutUint32(req[0:], 24)
	binary.LittleEndian.PutUint32(req[4:], 1)
	binary.LittleEndian.PutUint32(req[8:], 20)
	binary.LittleEndian.PutUint32(req[16:], 8)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply := make([]byte, 32)
	if _, err := io.ReadFull(c, reply); err != nil {
		t.Fatal(err)
	}
	if cid := binary.LittleEndian.Uint64(reply[24:]); cid != 7 {
		t.Fatalf("GET_CONFIG CID %d, want 7", cid)
	}
	c.Close()
	if _, err := net.Dial("unix", uds); err != nil {
		t.Fatalf("hybrid socket not listening: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit within 10s of SIGTERM")
	}
	for _, p := range []string{vu, uds} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
}

func TestBinaryRejectsBadFlags(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "wren-vsockd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{},
		{"--socket", filepath.Join(dir, "a")},
		{"--socket", filepath.Join(dir, "a"), "--uds-path", filepath.Join(dir, "b"), "--guest-cid", "2"},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil {
			t.Errorf("%v: exited 0:\n%s", args, out)
		}
	}
	// A regular file in the way is not deleted.
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "--socket", f, "--uds-path", filepath.Join(dir, "u")).CombinedOutput(); err == nil {
		t.Errorf("started over a regular file:\n%s", out)
	}
	if b, _ := os.ReadFile(f); string(b) != "keep" {
		t.Error("regular file at --socket was removed")
	}
	if _, err := os.Lstat(filepath.Join(dir, "u")); !os.IsNotExist(err) {
		t.Error("hybrid socket left behind after a failed start")
	}
}
