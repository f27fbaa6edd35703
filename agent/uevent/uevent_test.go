package uevent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"

	"github.com/wren-vm/wren/internal/testroot"
)

// Captured on this machine's kernel (6.18) with a NETLINK_KOBJECT_UEVENT
// socket while running LOOP_CTL_ADD/REMOVE and losetup.
var (
	capturedLoopAdd    = []byte("add@/devices/virtual/block/loop200\x00ACTION=add\x00DEVPATH=/devices/virtual/block/loop200\x00SUBSYSTEM=block\x00MAJOR=7\x00MINOR=200\x00DEVNAME=loop200\x00DEVTYPE=disk\x00DISKSEQ=13\x00SEQNUM=826\x00")
	capturedBdiAdd     = []byte("add@/devices/virtual/bdi/7:200\x00ACTION=add\x00DEVPATH=/devices/virtual/bdi/7:200\x00SUBSYSTEM=bdi\x00SEQNUM=825\x00")
	capturedLoopChange = []byte("change@/devices/virtual/block/loop0\x00ACTION=change\x00DEVPATH=/devices/virtual/block/loop0\x00SUBSYSTEM=block\x00DISK_MEDIA_CHANGE=1\x00MAJOR=7\x00MINOR=0\x00DEVNAME=loop0\x00DEVTYPE=disk\x00DISKSEQ=11\x00SEQNUM=824\x00")
	capturedLoopRemove = []byte("remove@/devices/virtual/block/loop200\x00ACTION=remove\x00DEVPATH=/devices/virtual/block/loop200\x00SUBSYSTEM=block\x00MAJOR=7\x00MINOR=200\x00DEVNAME=loop200\x00DEVTYPE=disk\x00DISKSEQ=13\x00SEQNUM=828\x00")
)

func TestParseCaptured(t *testing.T) {
	ev, err := Parse(capturedLoopAdd)
	if err != nil {
		t.Fatal(err)
	}
	want := Event{Action: "add", DevPath: "/devices/virtual/block/loop200", DevName: "loop200", DevType: "disk", Subsystem: "block", SeqNum: 826, Major: 7, Minor: 200}
	if ev.Action != want.Action || ev.DevPath != want.DevPath || ev.DevName != want.DevName || ev.DevType != want.DevType ||
		ev.Subsystem != want.Subsystem || ev.SeqNum != want.SeqNum || ev.Major != want.Major || ev.Minor != want.Minor {
		t.Fatalf("got %+v, want %+v", ev, want)
	}
	if ev.Env["DISKSEQ"] != "13" {
		t.Fatalf("DISKSEQ = %q", ev.Env["DISKSEQ"])
	}

	ev, err = Parse(capturedBdiAdd)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Subsystem != "bdi" || ev.Major != -1 || ev.Minor != -1 || ev.DevName != "" {
		t.Fatalf("bdi event parsed as %+v", ev)
	}
	ev, err = Parse(capturedLoopChange)
	if err != nil || ev.Action != ActionChange || ev.Env["DISK_MEDIA_CHANGE"] != "1" {
		t.Fatalf("change event: %+v, %v", ev, err)
	}
	ev, err = Parse(capturedLoopRemove)
	if err != nil || ev.Action != ActionRemove || ev.SeqNum != 828 {
		t.Fatalf("remove event: %+v, %v", ev, err)
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":           nil,
		"no at":           []byte("add/devices/x\x00ACTION=add\x00"),
		"empty devpath":   []byte("add@\x00ACTION=add\x00"),
		"field no equals": []byte("add@/devices/x\x00ACTION\x00"),
		"header mismatch": []byte("add@/devices/x\x00ACTION=remove\x00DEVPATH=/devices/x\x00"),
		"bad seqnum":      []byte("add@/devices/x\x00SEQNUM=abc\x00"),
		"bad major":       []byte("add@/devices/x\x00MAJOR=-1\x00"),
		"udev":            []byte("libudev\x00\xfe\xed\xca\xfe"),
		"huge":            append([]byte("add@/d\x00"), make([]byte, maxEventSize)...),
	} {
		if ev, err := Parse(b); err == nil {
			t.Errorf("%s: parsed as %+v, want error", name, ev)
		}
	}
}

func TestParseUeventFile(t *testing.T) {
	ev := parseUeventFile("/devices/virtual/block/loop0", []byte("MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\nDISKSEQ=11\n"))
	if ev.Action != ActionAdd || ev.DevName != "loop0" || ev.Major != 7 || ev.Minor != 0 {
		t.Fatalf("got %+v", ev)
	}
}

func listen(t *testing.T, timeout time.Duration) *Watcher {
	t.Helper()
	w, err := Listen(context.Background(), slog.Default(), Options{HotplugTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// addLoopDevice creates a new loop block device through /dev/loop-control
// at an index nobody uses, and removes it when the test ends.
func addLoopDevice(t *testing.T) string {
	t.Helper()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no loop-control: %v", err)
	}
	t.Cleanup(func() { ctl.Close() })
	for idx := 900; idx < 1000; idx++ {
		name := fmt.Sprintf("loop%d", idx)
		if _, err := os.Stat("/sys/class/block/" + name); err == nil {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_ADD, uintptr(idx)); errno != 0 {
			if errno == unix.EEXIST {
				continue
			}
			t.Fatalf("LOOP_CTL_ADD %d: %v", idx, errno)
		}
		t.Cleanup(func() {
			_, _, _ = unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, uintptr(idx))
		})
		return name
	}
	t.Fatal("no free loop index in 900..999")
	return ""
}

func TestListenSeesRealLoopAdd(t *testing.T) {
	testroot.Require(t)
	w := listen(t, 10*time.Second)
	name := addLoopDevice(t)
	ev, err := w.Wait(context.Background(), name, func(ev Event) bool {
		return ev.Subsystem == "block" && ev.DevName == name
	})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Major != 7 || ev.DevPath != "/devices/virtual/block/"+name {
		t.Fatalf("event %+v", ev)
	}
	// Now it is in the seen map: a wait returns it without blocking, even
	// with a context that is already cancelled.
	if _, err := w.Wait(cancelled(), name, func(ev Event) bool { return ev.DevName == name }); err != nil {
		t.Fatalf("second wait for a seen device: %v", err)
	}
}

func TestColdplugRecordsExistingDevices(t *testing.T) {
	testroot.Require(t)
	name := addLoopDevice(t) // exists before Listen
	w := listen(t, time.Second)
	ev, err := w.Wait(cancelled(), name, func(ev Event) bool { return ev.DevName == name })
	if err != nil {
		t.Fatalf("device present before Listen not seen: %v", err)
	}
	if ev.Subsystem != "block" || ev.Major != 7 || !strings.HasSuffix(ev.DevPath, "/"+name) {
		t.Fatalf("coldplug event %+v", ev)
	}
}

func TestWaitTimesOut(t *testing.T) {
	testroot.Require(t)
	w := listen(t, 50*time.Millisecond)
	_, err := w.Wait(context.Background(), "pci 0000:ff:1f.7", func(ev Event) bool { return ev.DevPath == "/nonexistent" })
	if errdefs.KindOf(err) != errdefs.ErrDeadlineExceeded || !strings.Contains(err.Error(), "pci 0000:ff:1f.7") {
		t.Fatalf("got %v, want DeadlineExceeded naming the device", err)
	}
	w.mu.Lock()
	n := len(w.waiters)
	w.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d waiters left registered after timeout", n)
	}
}

func TestWaitAfterClose(t *testing.T) {
	testroot.Require(t)
	w := listen(t, time.Second)
	w.Close()
	if _, err := w.Wait(context.Background(), "x", func(Event) bool { return false }); errdefs.KindOf(err) != errdefs.ErrUnavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
}

// Memory hotplug needs a VM; here a directory stands in for sysfs so the
// dispatch path (memory add → write 1 to <devpath>/online) is exercised.
func TestMemoryAddIsOnlined(t *testing.T) {
	sys := t.TempDir()
	blk := filepath.Join(sys, "devices/system/memory/memory42")
	if err := os.MkdirAll(blk, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blk, "online"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := &Watcher{log: slog.Default(), sysfs: sys, seen: map[string]Event{}, waiters: map[*waiter]struct{}{}, done: make(chan struct{})}
	ev, err := Parse([]byte("add@/devices/system/memory/memory42\x00ACTION=add\x00DEVPATH=/devices/system/memory/memory42\x00SUBSYSTEM=memory\x00SEQNUM=9\x00"))
	if err != nil {
		t.Fatal(err)
	}
	w.handle(ev)
	b, _ := os.ReadFile(filepath.Join(blk, "online"))
	if string(b) != "1" {
		t.Fatalf("online = %q, want 1", b)
	}
	// A remove drops the block from the seen map.
	w.handle(Event{Action: ActionRemove, DevPath: ev.DevPath, Subsystem: "memory"})
	if _, ok := w.seen[ev.DevPath]; ok {
		t.Fatal("removed device still seen")
	}
}

func TestColdplugRecordsPCIDevices(t *testing.T) {
	testroot.Require(t)
	entries, _ := os.ReadDir("/sys/bus/pci/devices")
	if len(entries) == 0 {
		t.Skip("no PCI devices")
	}
	w := listen(t, time.Second)
	real, err := filepath.EvalSymlinks(filepath.Join("/sys/bus/pci/devices", entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimPrefix(real, "/sys")
	ev, err := w.Wait(cancelled(), "pci "+entries[0].Name(), func(ev Event) bool { return ev.Subsystem == "pci" && ev.DevPath == want })
	if err != nil {
		t.Fatalf("cold-plugged PCI device %s not seen: %v", want, err)
	}
	if ev.Env["PCI_SLOT_NAME"] != entries[0].Name() {
		t.Fatalf("event %+v", ev)
	}
}

// Any process with CAP_NET_ADMIN can multicast on the uevent group; only
// the kernel's messages may count as devices.
func TestForgedUserspaceUeventIgnored(t *testing.T) {
	testroot.Require(t)
	w := listen(t, 300*time.Millisecond)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	// A plain receiver shows the forged message really is delivered.
	rx, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rx)
	if err := unix.Bind(rx, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2}); err != nil {
		t.Fatal(err)
	}
	msg := []byte("add@/devices/wren-forged/block/vdz\x00ACTION=add\x00DEVPATH=/devices/wren-forged/block/vdz\x00SUBSYSTEM=block\x00DEVNAME=vdz\x00SEQNUM=1\x00")
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		t.Skipf("cannot multicast on the uevent group here: %v", err)
	}
	delivered := false
	buf := make([]byte, 4096)
	for !delivered {
		n, from, err := unix.Recvfrom(rx, buf, 0)
		if err != nil {
			t.Skipf("forged message not delivered to receivers here: %v", err)
		}
		if nl, ok := from.(*unix.SockaddrNetlink); ok && nl.Pid != 0 && strings.Contains(string(buf[:n]), "wren-forged") {
			delivered = true
		}
	}
	_, err = w.Wait(context.Background(), "forged vdz", func(ev Event) bool { return ev.DevName == "vdz" })
	if errdefs.KindOf(err) != errdefs.ErrDeadlineExceeded {
		t.Fatalf("forged uevent accepted: %v", err)
	}
}
