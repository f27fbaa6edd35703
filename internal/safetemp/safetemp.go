// Package safetemp gives tests a temporary directory that is safe to mount
// into. testing.T.TempDir removes its directory with os.RemoveAll, which
// descends into anything still mounted below it: a leftover bind of /dev
// or a devtmpfs (the host's /dev, one instance) gets emptied. Dir's
// cleanup instead fails the test for every mount left below the
// directory, detaches it, and removes the tree with fsremove, which never
// crosses a mount.
package safetemp

import (
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/lib/fsremove"
)

// Dir creates a temporary directory removed safely when t ends.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wren-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanup(t, dir) })
	return dir
}

func cleanup(t testing.TB, dir string) {
	t.Helper()
	mounts, err := fsremove.MountsUnder(dir)
	if err != nil {
		t.Errorf("safetemp: %v; leaving %s in place", err, dir)
		return
	}
	// Deepest first, so that a parent is never detached with children
	// that are then unreachable but alive.
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		t.Errorf("safetemp: %s still mounted when the test ended; detaching it", m)
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Errorf("safetemp: detach %s: %v", m, err)
		}
	}
	if err := fsremove.All(dir); err != nil {
		t.Errorf("safetemp: %v", err)
	}
}
