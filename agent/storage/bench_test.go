package storage

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/wren-vm/wren/internal/testroot"
)

// BenchmarkMountReleaseTmpfs is one ephemeral volume's mount and unmount,
// mount point creation and removal included.
func BenchmarkMountReleaseTmpfs(b *testing.B) {
	testroot.Require(b)
	root := b.TempDir()
	m := New(Options{StateRoot: filepath.Join(root, "run")})
	vol := []Volume{{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(root, "run/sandbox/ephemeral/v")}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := m.MountVolumes(ctx, "c", vol); err != nil {
			b.Fatal(err)
		}
		if err := m.Release(ctx, "c"); err != nil {
			b.Fatal(err)
		}
	}
}
