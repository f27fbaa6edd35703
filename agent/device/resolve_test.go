package device

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
	"github.com/wren-vm/wren/agent/uevent"
	"github.com/wren-vm/wren/internal/testroot"
)

func TestParsePCIPath(t *testing.T) {
	for in, want := range map[string]string{
		"02":       "0:02.0",
		"02/00":    "0:02.0/00.0",
		"1f/03.7":  "0:1f.0/03.7",
		"20/00/02": "20:00.0/02.0",
		"02/00/01": "0:02.0/00.0/01.0",
	} {
		root, path, err := ParsePCIPath(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		var parts []string
		for _, p := range path {
			parts = append(parts, p.String())
		}
		if got := fmt.Sprintf("%x:%s", root, strings.Join(parts, "/")); got != want {
			t.Errorf("%q → %s, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"", "/", "02/", "20", "0x2", "2g", "02.8", "02.", "123", "../02", "02/00.10"} {
		if _, _, err := ParsePCIPath(bad); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
			t.Errorf("%q: got %v, want InvalidArgument", bad, err)
		}
	}
}

// No PCI bridge exists on this test machine, so a directory stands in for
// sysfs to check that each hop reads the bridge's secondary bus.
func TestPCIDevicePathFollowsBridges(t *testing.T) {
	sys := t.TempDir()
	for _, dir := range []string{
		"devices/pci0000:00/0000:00:02.0/pci_bus/0000:01",
		"devices/pci0000:00/0000:00:02.0/0000:01:03.0/pci_bus/0000:05",
	} {
		if err := os.MkdirAll(filepath.Join(sys, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d := &Devices{sysfs: sys, devDir: "/dev"}
	got, err := d.PCIDevicePath("02/03/00.1")
	if err != nil {
		t.Fatal(err)
	}
	if want := "/devices/pci0000:00/0000:00:02.0/0000:01:03.0/0000:05:00.1"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if _, err := d.PCIDevicePath("04/00"); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Fatalf("missing bridge: %v", err)
	}
}

// On arm64's virt machine the root bus hangs below the host bridge's
// platform device; sysfs's class/pci_bus link says where.
func TestPCIDevicePathARM64Layout(t *testing.T) {
	sys := t.TempDir()
	root := "devices/platform/4010000000.pcie/pci0000:00"
	for _, dir := range []string{root + "/pci_bus/0000:00", root + "/0000:00:10.0/pci_bus/0000:01", "class/pci_bus"} {
		if err := os.MkdirAll(filepath.Join(sys, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../../"+root+"/pci_bus/0000:00", filepath.Join(sys, "class/pci_bus/0000:00")); err != nil {
		t.Fatal(err)
	}
	d := &Devices{sysfs: sys, devDir: "/dev"}
	got, err := d.PCIDevicePath("10/00")
	if err != nil {
		t.Fatal(err)
	}
	if want := "/" + root + "/0000:00:10.0/0000:01:00.0"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func listen(t *testing.T, timeout time.Duration) *uevent.Watcher {
	t.Helper()
	testroot.Require(t)
	w, err := uevent.Listen(context.Background(), slog.Default(), uevent.Options{HotplugTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// This test machine is itself a VM whose root disk is virtio-blk: resolve
// its PCI path the way a hot-plugged volume is resolved.
func TestBlockByPCIPathFindsThisMachinesVirtioDisk(t *testing.T) {
	w := listen(t, time.Second)
	var slot string
	entries, _ := os.ReadDir("/sys/class/block")
	var name string
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/sys/class/block", e.Name()))
		if err != nil {
			continue
		}
		// ../../devices/pci0000:00/0000:00:02.0/virtio1/block/vda
		parts := strings.Split(target, "/")
		if len(parts) == 8 && parts[3] == "pci0000:00" && strings.HasPrefix(parts[5], "virtio") && parts[6] == "block" {
			slot = strings.TrimSuffix(strings.TrimPrefix(parts[4], "0000:00:"), ".0")
			name = e.Name()
			break
		}
	}
	if slot == "" {
		t.Skip("no virtio-blk disk on the root PCI bus")
	}
	d := New(w, Options{})
	dev, err := d.BlockByPCIPath(context.Background(), slot)
	if err != nil {
		t.Fatal(err)
	}
	if dev != "/dev/"+name {
		t.Fatalf("PCI path %s → %s, want /dev/%s", slot, dev, name)
	}
	// An empty slot times out naming the PCI path.
	_, err = d.BlockByPCIPath(context.Background(), "1f")
	if errdefs.KindOf(err) != errdefs.ErrDeadlineExceeded || !strings.Contains(err.Error(), "PCI path 1f") {
		t.Fatalf("empty slot: %v", err)
	}
}

func TestBlockByNameWaitsForHotplug(t *testing.T) {
	w := listen(t, 10*time.Second)
	d := New(w, Options{})
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Skip(err)
	}
	defer ctl.Close()
	idx := 0
	for idx = 950; idx < 1000; idx++ {
		if _, err := os.Stat(fmt.Sprintf("/sys/class/block/loop%d", idx)); err != nil {
			break
		}
	}
	node := fmt.Sprintf("/dev/loop%d", idx)
	type result struct {
		dev string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		dev, err := d.BlockByName(context.Background(), node)
		ch <- result{dev, err}
	}()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_ADD, uintptr(idx)); errno != 0 {
		t.Fatalf("LOOP_CTL_ADD: %v", errno)
	}
	defer func() { _, _, _ = unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, uintptr(idx)) }()
	r := <-ch
	if r.err != nil || r.dev != node {
		t.Fatalf("got %q %v, want %s", r.dev, r.err, node)
	}
	if _, err := d.BlockByName(context.Background(), "vda"); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Fatalf("non-/dev name: %v", err)
	}
}

func TestBlockBySCSIAddrRejectsGarbage(t *testing.T) {
	d := New(nil, Options{})
	for _, bad := range []string{"", "0", "a:b", "0:-1", "0:0:0"} {
		if _, err := d.BlockBySCSIAddr(context.Background(), bad); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// The test machine's NIC is virtio-net on the root bus: find its name from
// its PCI path, as UpdateInterface does for a hot-plugged NIC.
func TestNetByPCIPathFindsThisMachinesNIC(t *testing.T) {
	w := listen(t, time.Second)
	var slot, name string
	entries, _ := os.ReadDir("/sys/class/net")
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/sys/class/net", e.Name()))
		if err != nil {
			continue
		}
		parts := strings.Split(target, "/")
		if len(parts) == 8 && parts[3] == "pci0000:00" && parts[6] == "net" {
			slot = strings.TrimSuffix(strings.TrimPrefix(parts[4], "0000:00:"), ".0")
			name = e.Name()
			break
		}
	}
	if slot == "" {
		t.Skip("no PCI NIC on the root bus")
	}
	got, err := New(w, Options{}).NetByPCIPath(context.Background(), slot)
	if err != nil || got != name {
		t.Fatalf("PCI path %s → %q %v, want %s", slot, got, err, name)
	}
}
