package device

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/uevent"
)

// Device types of CreateContainerRequest.devices, as Kata's runtime sends
// them.
const (
	TypeBlk       = "blk"
	TypeMMIOBlk   = "mmioblk"
	TypeSCSI      = "scsi"
	TypeNVDIMM    = "nvdimm"
	TypeVFIOPCI   = "vfio-pci"
	TypeVFIO      = "vfio" // the pre-3.x name of vfio-pci
	TypeVFIOPCIGK = "vfio-pci-gk"
)

// Handlers lists the device types, as reported in AgentDetails.
func Handlers() []string {
	return []string{TypeBlk, TypeMMIOBlk, TypeSCSI, TypeNVDIMM, TypeVFIOPCI, TypeVFIOPCIGK}
}

// Device is one device of a CreateContainer request, in the agent's terms.
type Device struct {
	// ID names the device: a PCI path, SCSI address, ... by Type.
	ID string
	// Type is one of the Type constants.
	Type string
	// VMPath is the device node in the guest, when the host knows it.
	VMPath string
	// ContainerPath is the device's path in the container's spec.
	ContainerPath string
	// Options are driver options (vfio: "0000:00:02.0=02/00").
	Options []string
}

// update is what one device changes in the spec.
type update struct {
	containerPath string
	guestPath     string // node in the guest
	newPath       string // container path after the update ("" keeps it)
}

// Apply waits for every device of a CreateContainer request to appear in
// the guest and rewrites the spec's linux.devices and
// linux.resources.devices entries to the guest's major/minor. The spec is
// only modified when every device resolved.
func (d *Devices) Apply(ctx context.Context, devs []Device, spec *specs.Spec) error {
	ups, err := d.resolveAll(ctx, devs)
	if err != nil || len(ups) == 0 {
		return err
	}
	if spec == nil || spec.Linux == nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "devices given for a spec without a linux section")
	}
	nums, err := guestNumbers(ups)
	if err != nil {
		return err
	}
	devIdx, err := specDeviceIndexes(spec, ups)
	if err != nil {
		return err
	}
	rewriteSpec(spec, ups, nums, devIdx)
	return nil
}

// devNum is a device's type ("b", "c", or in a resource rule also "a" or
// "") and major/minor numbers.
type devNum struct {
	typ          string
	major, minor int64
}

// resolveAll waits for each device and returns the updates of those that
// appear in the spec.
func (d *Devices) resolveAll(ctx context.Context, devs []Device) ([]update, error) {
	var ups []update
	for i, dev := range devs {
		u, err := d.resolve(ctx, dev)
		if err != nil {
			return nil, fmt.Errorf("device %d (%s %s): %w", i, dev.Type, firstNonEmpty(dev.ID, dev.VMPath), err)
		}
		if u.containerPath != "" {
			ups = append(ups, u)
		}
	}
	return ups, nil
}

// guestNumbers reads the type and numbers of each update's guest node.
func guestNumbers(ups []update) ([]devNum, error) {
	nums := make([]devNum, len(ups))
	for i, u := range ups {
		var st unix.Stat_t
		if err := unix.Stat(u.guestPath, &st); err != nil {
			return nil, errdefs.Errorf(errdefs.ErrNotFound, "device node %s: %v", u.guestPath, err)
		}
		typ := "c"
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFBLK:
			typ = "b"
		case unix.S_IFCHR:
		default:
			return nil, errdefs.Errorf(errdefs.ErrFailedPrecondition, "%s is not a device node", u.guestPath)
		}
		nums[i] = devNum{typ, int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))}
	}
	return nums, nil
}

// specDeviceIndexes finds each update's entry in the spec's linux.devices.
func specDeviceIndexes(spec *specs.Spec, ups []update) ([]int, error) {
	devIdx := make([]int, len(ups))
	for i, u := range ups {
		devIdx[i] = -1
		for j := range spec.Linux.Devices {
			if spec.Linux.Devices[j].Path == u.containerPath {
				devIdx[i] = j
				break
			}
		}
		if devIdx[i] < 0 {
			return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "device %s is not in the spec's linux.devices", u.containerPath)
		}
	}
	return devIdx, nil
}

// rewriteSpec gives each update's linux.devices entry (devIdx) the guest
// numbers (nums) and new path, and the resource rules that matched its
// host numbers the guest numbers.
func rewriteSpec(spec *specs.Spec, ups []update, nums []devNum, devIdx []int) {
	// Resource rules are matched on the host numbers as they were before
	// any rewrite, so two devices whose numbers swap do not collide.
	res := []specs.LinuxDeviceCgroup(nil)
	if spec.Linux.Resources != nil {
		res = spec.Linux.Resources.Devices
	}
	origRes := make([]*devNum, len(res))
	for i, r := range res {
		if r.Major != nil && r.Minor != nil {
			origRes[i] = &devNum{r.Type, *r.Major, *r.Minor}
		}
	}
	for i, u := range ups {
		sd := &spec.Linux.Devices[devIdx[i]]
		host := devNum{sd.Type, sd.Major, sd.Minor}
		sd.Major, sd.Minor = nums[i].major, nums[i].minor
		if u.newPath != "" {
			sd.Path = u.newPath
		}
		for j := range res {
			o := origRes[j]
			if o == nil || o.major != host.major || o.minor != host.minor || (o.typ != "" && o.typ != "a" && o.typ != host.typ) {
				continue
			}
			maj, min := nums[i].major, nums[i].minor
			res[j].Major, res[j].Minor = &maj, &min
			origRes[j] = nil
		}
	}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func (d *Devices) resolve(ctx context.Context, dev Device) (update, error) {
	u := update{containerPath: dev.ContainerPath}
	var err error
	switch dev.Type {
	case TypeBlk:
		switch {
		case dev.ID != "":
			u.guestPath, err = d.BlockByPCIPath(ctx, dev.ID)
		case strings.HasPrefix(dev.VMPath, "/dev/"):
			u.guestPath = dev.VMPath
		default:
			err = errdefs.New(errdefs.ErrInvalidArgument, "blk device without a PCI path or /dev path")
		}
	case TypeMMIOBlk, TypeNVDIMM:
		if dev.VMPath == "" {
			return u, errdefs.Errorf(errdefs.ErrInvalidArgument, "%s device without vm_path", dev.Type)
		}
		u.guestPath, err = d.BlockByName(ctx, dev.VMPath)
	case TypeSCSI:
		u.guestPath, err = d.BlockBySCSIAddr(ctx, dev.ID)
	case TypeVFIOPCI, TypeVFIO, TypeVFIOPCIGK:
		var group string
		group, err = d.vfio(ctx, dev, dev.Type != TypeVFIOPCIGK)
		if dev.Type == TypeVFIOPCIGK {
			// Bound to a guest kernel driver: nothing to put in the spec.
			u.containerPath = ""
			break
		}
		u.guestPath = filepath.Join(d.devDir, "vfio", group)
		u.newPath = filepath.Join("/dev/vfio", group)
	default:
		return u, errdefs.Errorf(errdefs.ErrInvalidArgument, "unknown device type %q", dev.Type)
	}
	return u, err
}

// vfio waits for each PCI function of a VFIO device (options
// "<host BDF>=<guest PCI path>"), binds it to vfio-pci when asked, and
// returns the IOMMU group they share.
func (d *Devices) vfio(ctx context.Context, dev Device, bindVFIO bool) (string, error) {
	if len(dev.Options) == 0 {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "VFIO device without host=guest PCI options")
	}
	group := ""
	for _, opt := range dev.Options {
		_, guestPath, ok := strings.Cut(opt, "=")
		if !ok {
			return "", errdefs.Errorf(errdefs.ErrInvalidArgument, "VFIO option %q is not host_bdf=guest_pci_path", opt)
		}
		sysDev, err := d.PCIDevicePath(guestPath)
		if err != nil {
			return "", err
		}
		if _, err := d.wait(ctx, "PCI device at "+guestPath, func(ev uevent.Event) bool {
			return ev.Subsystem == "pci" && ev.DevPath == sysDev
		}); err != nil {
			return "", err
		}
		if bindVFIO {
			if err := d.bindVFIO(sysDev); err != nil {
				return "", err
			}
		}
		link, err := os.Readlink(filepath.Join(d.sysfs, sysDev, "iommu_group"))
		if err != nil {
			return "", errdefs.Errorf(errdefs.ErrFailedPrecondition, "PCI device %s has no IOMMU group: %v", guestPath, err)
		}
		g := filepath.Base(link)
		if _, err := strconv.ParseUint(g, 10, 32); err != nil {
			return "", fmt.Errorf("IOMMU group link %s: %w", link, err)
		}
		if group != "" && g != group {
			return "", errdefs.Errorf(errdefs.ErrInvalidArgument, "VFIO device spans IOMMU groups %s and %s", group, g)
		}
		group = g
	}
	return group, nil
}

// bindVFIO hands a PCI function to the vfio-pci driver.
func (d *Devices) bindVFIO(sysDev string) error {
	dir := filepath.Join(d.sysfs, sysDev)
	if drv, err := os.Readlink(filepath.Join(dir, "driver")); err == nil {
		if filepath.Base(drv) == "vfio-pci" {
			return nil
		}
		if err := os.WriteFile(filepath.Join(dir, "driver/unbind"), []byte(filepath.Base(sysDev)), 0); err != nil {
			return fmt.Errorf("unbind %s from %s: %w", sysDev, filepath.Base(drv), err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "driver_override"), []byte("vfio-pci"), 0); err != nil {
		return fmt.Errorf("driver_override of %s: %w", sysDev, err)
	}
	if err := os.WriteFile(filepath.Join(d.sysfs, "bus/pci/drivers_probe"), []byte(filepath.Base(sysDev)), 0); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("probe %s: %w", sysDev, err)
	}
	return nil
}
