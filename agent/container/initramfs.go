package container

import (
	"errors"
	"fmt"

	"github.com/moby/sys/mountinfo"
)

// rootMounts are the mounts at / as this process sees them, bottom first.
func rootMounts() ([]*mountinfo.Info, error) {
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter("/"))
	if err != nil {
		return nil, fmt.Errorf("root mount: %w", err)
	}
	if len(mounts) == 0 {
		return nil, errors.New("root mount: / is not in /proc/self/mountinfo")
	}
	return mounts, nil
}

// RootMount describes the filesystem mounted at /: the initramfs
// ("rootfs"), or a root image the kernel mounted (for Kata's image mode,
// ext4 on the nvdimm with dax=always).
func RootMount() (*mountinfo.Info, error) {
	mounts, err := rootMounts()
	if err != nil {
		return nil, err
	}
	return mounts[len(mounts)-1], nil
}

// RootIsInitramfs reports whether / is the initial ramfs ("rootfs"), where
// pivot_root(2) fails and containers need no_pivot_root (MS_MOVE + chroot).
func RootIsInitramfs() bool {
	mounts, err := rootMounts()
	if err != nil {
		return false
	}
	for _, m := range mounts {
		if m.FSType == "rootfs" {
			return true
		}
	}
	return false
}
