package device

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
)

// loopDevice attaches an empty image to a free loop device for the test.
func loopDevice(t *testing.T) (string, int64, int64) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	return dev, int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
}

func i64(v int64) *int64 { return &v }

func TestApplyRewritesMajorMinor(t *testing.T) {
	w := listen(t, 2*time.Second)
	d := New(w, Options{})
	dev, maj, min := loopDevice(t)
	spec := &specs.Spec{Linux: &specs.Linux{
		Devices: []specs.LinuxDevice{
			{Path: "/dev/xvda", Type: "b", Major: 8, Minor: 0},
			{Path: "/dev/xvdb", Type: "b", Major: 8, Minor: 16},
		},
		Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
			{Allow: false, Access: "rwm"},
			{Allow: true, Type: "b", Major: i64(8), Minor: i64(16), Access: "rw"},
			{Allow: true, Type: "c", Major: i64(8), Minor: i64(16), Access: "rw"}, // a char device with the same numbers
		}},
	}}
	err := d.Apply(context.Background(), []Device{
		// mmioblk waits for the device's uevent (here: seen at start-up).
		{Type: TypeMMIOBlk, VMPath: dev, ContainerPath: "/dev/xvdb"},
		// A rootfs device: waited for, but nothing in the spec to update.
		{Type: TypeBlk, VMPath: dev},
	}, spec)
	if err != nil {
		t.Fatal(err)
	}
	got := spec.Linux.Devices[1]
	if got.Major != maj || got.Minor != min || got.Path != "/dev/xvdb" {
		t.Fatalf("device rewritten to %+v, want %d:%d", got, maj, min)
	}
	if spec.Linux.Devices[0].Major != 8 || spec.Linux.Devices[0].Minor != 0 {
		t.Fatal("unrelated device changed")
	}
	r := spec.Linux.Resources.Devices
	if *r[1].Major != maj || *r[1].Minor != min {
		t.Fatalf("cgroup rule not rewritten: %d:%d", *r[1].Major, *r[1].Minor)
	}
	if *r[2].Major != 8 || *r[2].Minor != 16 {
		t.Fatal("char-device rule with the same numbers was rewritten")
	}
}

func TestApplySwappedNumbersDoNotCollide(t *testing.T) {
	w := listen(t, 2*time.Second)
	d := New(w, Options{})
	devA, majA, minA := loopDevice(t)
	devB, majB, minB := loopDevice(t)
	// On the host A had B's guest numbers and B had A's.
	spec := &specs.Spec{Linux: &specs.Linux{
		Devices: []specs.LinuxDevice{
			{Path: "/dev/a", Type: "b", Major: majB, Minor: minB},
			{Path: "/dev/b", Type: "b", Major: majA, Minor: minA},
		},
		Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
			{Allow: true, Type: "b", Major: i64(majB), Minor: i64(minB), Access: "r"},
			{Allow: true, Type: "b", Major: i64(majA), Minor: i64(minA), Access: "w"},
		}},
	}}
	err := d.Apply(context.Background(), []Device{
		{Type: TypeBlk, VMPath: devA, ContainerPath: "/dev/a"},
		{Type: TypeBlk, VMPath: devB, ContainerPath: "/dev/b"},
	}, spec)
	if err != nil {
		t.Fatal(err)
	}
	r := spec.Linux.Resources.Devices
	if *r[0].Minor != minA || *r[1].Minor != minB {
		t.Fatalf("rules %d and %d, want %d (read) and %d (write)", *r[0].Minor, *r[1].Minor, minA, minB)
	}
}

func TestApplyRejectsBadRequestsWithoutTouchingSpec(t *testing.T) {
	w := listen(t, 100*time.Millisecond)
	d := New(w, Options{})
	dev, _, _ := loopDevice(t)
	fresh := func() *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Devices: []specs.LinuxDevice{{Path: "/dev/xvdb", Type: "b", Major: 8, Minor: 16}}}}
	}
	for name, tc := range map[string]struct {
		devs []Device
		code error
	}{
		"unknown type":    {[]Device{{Type: "floppy", VMPath: dev, ContainerPath: "/dev/xvdb"}}, errdefs.ErrInvalidArgument},
		"not in spec":     {[]Device{{Type: TypeBlk, VMPath: dev, ContainerPath: "/dev/other"}}, errdefs.ErrInvalidArgument},
		"mmio no vm_path": {[]Device{{Type: TypeMMIOBlk, ContainerPath: "/dev/xvdb"}}, errdefs.ErrInvalidArgument},
		"bad PCI path":    {[]Device{{Type: TypeBlk, ID: "zz", ContainerPath: "/dev/xvdb"}}, errdefs.ErrInvalidArgument},
		"never appears":   {[]Device{{Type: TypeNVDIMM, VMPath: "/dev/pmem9", ContainerPath: "/dev/xvdb"}}, errdefs.ErrDeadlineExceeded},
		"vfio no options": {[]Device{{Type: TypeVFIOPCI, ContainerPath: "/dev/vfio/3"}}, errdefs.ErrInvalidArgument},
		"second fails":    {[]Device{{Type: TypeBlk, VMPath: dev, ContainerPath: "/dev/xvdb"}, {Type: "floppy"}}, errdefs.ErrInvalidArgument},
	} {
		spec := fresh()
		err := d.Apply(context.Background(), tc.devs, spec)
		if errdefs.KindOf(err) != tc.code {
			t.Errorf("%s: got %v, want %v", name, err, tc.code)
		}
		if spec.Linux.Devices[0].Major != 8 || spec.Linux.Devices[0].Minor != 16 {
			t.Errorf("%s: spec modified by a failed request", name)
		}
	}
}
