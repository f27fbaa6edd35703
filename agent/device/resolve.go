// Package device finds hot-plugged devices in the guest (virtio-blk by PCI
// path, virtio-mmio, SCSI, pmem, VFIO) by waiting for their uevents, and
// rewrites a container's OCI device entries to the guest's major/minor.
package device

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/uevent"
)

// Waiter is what device resolution needs from the uevent listener.
type Waiter interface {
	Wait(ctx context.Context, device string, match func(uevent.Event) bool) (uevent.Event, error)
	SysfsRoot() string
}

// Devices resolves guest device nodes and applies them to OCI specs.
type Devices struct {
	w      Waiter
	sysfs  string
	devDir string
}

// Options tunes Devices; the zero value is right for a guest.
type Options struct {
	// DevDir is where device nodes live; "" means /dev.
	DevDir string
}

// New returns Devices that waits for hotplug through w.
func New(w Waiter, opts Options) *Devices {
	d := &Devices{w: w, sysfs: "/sys", devDir: opts.DevDir}
	if w != nil && w.SysfsRoot() != "" {
		d.sysfs = w.SysfsRoot()
	}
	if d.devDir == "" {
		d.devDir = "/dev"
	}
	return d
}

func (d *Devices) wait(ctx context.Context, device string, match func(uevent.Event) bool) (uevent.Event, error) {
	if d.w == nil {
		return uevent.Event{}, errdefs.Errorf(errdefs.ErrFailedPrecondition, "no uevent listener to wait for %s", device)
	}
	return d.w.Wait(ctx, device, match)
}

// PCISlot is one hop of a PCI path: the device (and function) on the bus
// behind the previous hop.
type PCISlot struct{ Slot, Func uint8 }

func (s PCISlot) String() string { return fmt.Sprintf("%02x.%x", s.Slot, s.Func) }

// ParsePCIPath parses a Kata PCI path such as "02/00" or "02/01.1": slots
// (hex, < 0x20) with an optional function (< 8), from the root bus down.
// A first element of 0x20 or more names a pxb-pcie root bus, as in Kata.
func ParsePCIPath(p string) (rootBus uint8, path []PCISlot, err error) {
	if p == "" {
		return 0, nil, errdefs.New(errdefs.ErrInvalidArgument, "empty PCI path")
	}
	parts := strings.Split(p, "/")
	if len(parts) > 16 {
		return 0, nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "PCI path %q has too many hops", p)
	}
	if len(parts) >= 3 {
		if b, err := strconv.ParseUint(parts[0], 16, 8); err == nil && b >= 0x20 && len(parts[0]) == 2 {
			rootBus = uint8(b)
			parts = parts[1:]
		}
	}
	for _, part := range parts {
		slotStr, fnStr, hasFn := strings.Cut(part, ".")
		slot, err := strconv.ParseUint(slotStr, 16, 8)
		if err != nil || slot >= 0x20 || len(slotStr) == 0 || len(slotStr) > 2 {
			return 0, nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "PCI path %q: bad slot %q", p, part)
		}
		var fn uint64
		if hasFn {
			fn, err = strconv.ParseUint(fnStr, 16, 8)
			if err != nil || fn >= 8 || len(fnStr) != 1 {
				return 0, nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "PCI path %q: bad function %q", p, part)
			}
		}
		path = append(path, PCISlot{Slot: uint8(slot), Func: uint8(fn)})
	}
	return rootBus, path, nil
}

// pciRootBus is the sysfs directory (relative to sysfs) of a PCI root bus:
// where sysfs's class/pci_bus/0000:XX link leads. That is
// /devices/pci0000:XX on x86 (ACPI host bridge), but below the host
// bridge's platform device on arm64's virt machine (device tree), e.g.
// /devices/platform/4010000000.pcie/pci0000:00. Without the link (a bus
// that is not there yet), the x86 layout.
func (d *Devices) pciRootBus(rootBus uint8) string {
	bus := fmt.Sprintf("0000:%02x", rootBus)
	fallback := "/devices/pci" + bus
	link, err := os.Readlink(filepath.Join(d.sysfs, "class", "pci_bus", bus))
	if err != nil {
		return fallback
	}
	// The link, e.g. ../../devices/pci0000:00/pci_bus/0000:00, is
	// relative to class/pci_bus; the root bus is two levels above its end.
	p := filepath.Clean(filepath.Join("/class/pci_bus", link))
	if !strings.HasPrefix(p, "/devices/") || filepath.Base(filepath.Dir(p)) != "pci_bus" {
		return fallback
	}
	return filepath.Dir(filepath.Dir(p))
}

// PCIDevicePath turns a PCI path into the device's sysfs path relative to
// the sysfs root (e.g. /devices/pci0000:00/0000:00:02.0/0000:01:00.0),
// reading each bridge's secondary bus from sysfs.
func (d *Devices) PCIDevicePath(pciPath string) (string, error) {
	root, path, err := ParsePCIPath(pciPath)
	if err != nil {
		return "", err
	}
	rel := d.pciRootBus(root)
	bus := fmt.Sprintf("0000:%02x", root)
	for i, hop := range path {
		rel += fmt.Sprintf("/%s:%s", bus, hop)
		if i == len(path)-1 {
			break
		}
		busDir := filepath.Join(d.sysfs, rel, "pci_bus")
		entries, err := os.ReadDir(busDir)
		if err != nil {
			return "", errdefs.Errorf(errdefs.ErrNotFound, "PCI path %s: bridge %s: %v", pciPath, rel, err)
		}
		if len(entries) != 1 {
			return "", errdefs.Errorf(errdefs.ErrFailedPrecondition, "PCI path %s: bridge %s exposes %d buses, want 1", pciPath, rel, len(entries))
		}
		bus = entries[0].Name()
	}
	return rel, nil
}

// lastBlockName returns the disk name when devPath is .../block/<name>
// (a whole disk, not a partition below it), else "".
func lastBlockName(devPath string) string {
	i := strings.LastIndex(devPath, "/block/")
	if i < 0 {
		return ""
	}
	name := devPath[i+len("/block/"):]
	if name == "" || strings.Contains(name, "/") {
		return ""
	}
	return name
}

// BlockByPCIPath waits for the virtio-blk disk at a PCI path and returns its
// node, e.g. /dev/vda.
func (d *Devices) BlockByPCIPath(ctx context.Context, pciPath string) (string, error) {
	dev, err := d.PCIDevicePath(pciPath)
	if err != nil {
		return "", err
	}
	prefix := dev + "/virtio"
	ev, err := d.wait(ctx, "virtio-blk at PCI path "+pciPath, func(ev uevent.Event) bool {
		return ev.Subsystem == "block" && ev.DevName != "" && strings.HasPrefix(ev.DevPath, prefix) && lastBlockName(ev.DevPath) != ""
	})
	if err != nil {
		return "", err
	}
	return d.node(ev.DevName)
}

// BlockByName waits for a block device whose node is devNode (/dev/vdb for
// virtio-mmio, /dev/pmem0 for nvdimm) and returns devNode.
func (d *Devices) BlockByName(ctx context.Context, devNode string) (string, error) {
	name, ok := strings.CutPrefix(devNode, "/dev/")
	if !ok || name == "" || strings.Contains(name, "..") {
		return "", errdefs.Errorf(errdefs.ErrInvalidArgument, "device %q is not a /dev path", devNode)
	}
	ev, err := d.wait(ctx, "block device "+devNode, func(ev uevent.Event) bool {
		return ev.Subsystem == "block" && ev.DevName == name
	})
	if err != nil {
		return "", err
	}
	return d.node(ev.DevName)
}

// BlockBySCSIAddr waits for the SCSI disk at "target:lun" (virtio-scsi puts
// every disk on channel 0) and returns its node, e.g. /dev/sda.
func (d *Devices) BlockBySCSIAddr(ctx context.Context, addr string) (string, error) {
	tgt, lun, ok := strings.Cut(addr, ":")
	t, err1 := strconv.ParseUint(tgt, 10, 16)
	l, err2 := strconv.ParseUint(lun, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return "", errdefs.Errorf(errdefs.ErrInvalidArgument, "SCSI address %q is not target:lun", addr)
	}
	d.scanSCSI(t, l)
	infix := fmt.Sprintf("/0:0:%d:%d/block/", t, l)
	ev, err := d.wait(ctx, "SCSI disk "+addr, func(ev uevent.Event) bool {
		return ev.Subsystem == "block" && ev.DevName != "" && strings.Contains(ev.DevPath, infix) && lastBlockName(ev.DevPath) != ""
	})
	if err != nil {
		return "", err
	}
	return d.node(ev.DevName)
}

// scanSCSI asks every SCSI host to probe the address, so a disk hot-added
// without a unit attention still appears.
func (d *Devices) scanSCSI(target, lun uint64) {
	hosts, _ := filepath.Glob(filepath.Join(d.sysfs, "class/scsi_host/host*/scan"))
	for _, scan := range hosts {
		_ = os.WriteFile(scan, fmt.Appendf(nil, "0 %d %d", target, lun), 0)
	}
}

func (d *Devices) node(devName string) (string, error) {
	if devName == "" || strings.Contains(devName, "..") {
		return "", fmt.Errorf("uevent carries unusable device name %q", devName)
	}
	return filepath.Join(d.devDir, devName), nil
}

// NetByPCIPath waits for the network interface of the NIC at a PCI path and
// returns its name.
func (d *Devices) NetByPCIPath(ctx context.Context, pciPath string) (string, error) {
	dev, err := d.PCIDevicePath(pciPath)
	if err != nil {
		return "", err
	}
	prefix := dev + "/"
	ev, err := d.wait(ctx, "network interface at PCI path "+pciPath, func(ev uevent.Event) bool {
		return ev.Subsystem == "net" && ev.Interface != "" && strings.HasPrefix(ev.DevPath, prefix) && strings.Contains(ev.DevPath, "/net/")
	})
	if err != nil {
		return "", err
	}
	return ev.Interface, nil
}
