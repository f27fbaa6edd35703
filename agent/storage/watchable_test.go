package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wren-vm/wren/agent/errdefs"

	"github.com/wren-vm/wren/internal/testroot"
)

func TestWatchableBindCopiesRefreshesAndFallsBack(t *testing.T) {
	testroot.Require(t)
	root := t.TempDir()
	// A long interval: the test drives refreshes itself instead of sleeping.
	m := New(Options{StateRoot: filepath.Join(root, "run"), WatchInterval: time.Hour})
	t.Cleanup(func() { _ = m.ReleaseAll(context.Background()) })
	before := mountTable(t)

	src := filepath.Join(SharedDir(m.StateRoot()), "c1-abc-config")
	must(t, os.MkdirAll(filepath.Join(src, "..2026_data"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "..2026_data/key"), []byte("v1"), 0o644))
	must(t, os.Symlink("..2026_data", filepath.Join(src, "..data")))
	must(t, os.Symlink("..data/key", filepath.Join(src, "key")))

	watchDir := filepath.Join(SharedDir(m.StateRoot()), "watchable")
	mp := filepath.Join(watchDir, "c1-abc-config")
	if err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverWatchableBind, Source: src, MountPoint: mp}}); err != nil {
		t.Fatal(err)
	}
	if fstype, _, ok := mountAt(t, watchDir); !ok || fstype != "tmpfs" {
		t.Fatalf("no tmpfs at %s", watchDir)
	}
	read := func() string {
		b, err := os.ReadFile(filepath.Join(mp, "key"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(); got != "v1" {
		t.Fatalf("copy reads %q", got)
	}
	// The host updates the ConfigMap the way the kubelet does: new data dir,
	// swap the ..data link.
	must(t, os.MkdirAll(filepath.Join(src, "..2027_data"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "..2027_data/key"), []byte("v2"), 0o644))
	os.Remove(filepath.Join(src, "..data"))
	must(t, os.Symlink("..2027_data", filepath.Join(src, "..data")))
	os.RemoveAll(filepath.Join(src, "..2026_data"))
	m.watch.refreshAll()
	if got := read(); got != "v2" {
		t.Fatalf("after refresh reads %q, want v2", got)
	}
	if _, err := os.Stat(filepath.Join(mp, "..2026_data")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("vanished source entry still in the copy")
	}
	if _, _, ok := mountAt(t, mp); ok {
		t.Fatal("a small source should be copied, not bind-mounted")
	}

	// Past Kata's 16-entry limit the source is bind-mounted instead.
	for i := range 20 {
		must(t, os.WriteFile(filepath.Join(src, fmt.Sprintf("extra%d", i)), []byte("x"), 0o644))
	}
	m.watch.refreshAll()
	if _, _, ok := mountAt(t, mp); !ok {
		t.Fatal("oversized source not bind-mounted")
	}
	if _, err := os.Stat(filepath.Join(mp, "extra19")); err != nil {
		t.Fatal(err)
	}

	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
	if _, err := os.Stat(watchDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("watchable dirs left: %v", err)
	}
}

func TestWatchableBindSourceConfinedToSharedDir(t *testing.T) {
	testroot.Require(t)
	root := t.TempDir()
	m := New(Options{StateRoot: filepath.Join(root, "run"), WatchInterval: time.Hour})
	t.Cleanup(func() { _ = m.ReleaseAll(context.Background()) })
	before := mountTable(t)
	shared := SharedDir(m.StateRoot())
	watchDir := filepath.Join(shared, "watchable")
	secret := filepath.Join(root, "guest-secret")
	must(t, os.MkdirAll(secret, 0o700))
	must(t, os.WriteFile(filepath.Join(secret, "key"), []byte("guest only"), 0o600))
	must(t, os.MkdirAll(shared, 0o755))
	must(t, os.Symlink(secret, filepath.Join(shared, "link-out")))

	cases := []struct {
		name, source string
		code         error
	}{
		{"outside", secret, errdefs.ErrInvalidArgument},
		{"dot-dot out of the shared dir", filepath.Join(shared, "..", "..", "..", "guest-secret"), errdefs.ErrInvalidArgument},
		{"symlink in the shared dir pointing out", filepath.Join(shared, "link-out"), errdefs.ErrInvalidArgument},
		{"relative", "c1-config", errdefs.ErrInvalidArgument},
		{"missing", filepath.Join(shared, "nothing"), errdefs.ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverWatchableBind, Source: c.source, MountPoint: filepath.Join(watchDir, "c1-x")}})
			if got := errdefs.KindOf(err); got != c.code {
				t.Fatalf("code %v (%v), want %v", got, err, c.code)
			}
			assertMountsUnchanged(t, before)
			if _, err := os.Stat(watchDir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("watchable dir left: %v", err)
			}
		})
	}

	// Accepted, then swapped for a symlink to a guest path: the refresh
	// refuses it and the container keeps the last good copy.
	src := filepath.Join(shared, "c1-config")
	must(t, os.MkdirAll(src, 0o755))
	must(t, os.WriteFile(filepath.Join(src, "key"), []byte("v1"), 0o644))
	mp := filepath.Join(watchDir, "c1-config")
	if err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverWatchableBind, Source: src, MountPoint: mp}}); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(src)
	must(t, os.Symlink(secret, src))
	m.watch.refreshAll()
	if b, err := os.ReadFile(filepath.Join(mp, "key")); err != nil || string(b) != "v1" {
		t.Fatalf("after the swap the copy reads %q, %v; want the last good copy v1", b, err)
	}
	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
}

// swapAfterScan makes the next refresh find, between its check of the
// source and its copy, dir replaced by a symlink to target: what a host
// racing the agent can do in the shared directory.
func swapAfterScan(t *testing.T, dir, target string) {
	t.Helper()
	t.Cleanup(func() { testHookAfterScan = nil })
	testHookAfterScan = func() {
		testHookAfterScan = nil
		if err := os.Rename(dir, dir+".old"); err != nil {
			t.Error(err)
		}
		if err := os.Symlink(target, dir); err != nil {
			t.Error(err)
		}
	}
}

// guestSecret makes a directory outside the shared directory holding what
// the host must never get copied into a container.
func guestSecret(t *testing.T, root string) string {
	t.Helper()
	secret := filepath.Join(root, "guest-secret")
	if err := os.MkdirAll(secret, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"key", "other"} {
		if err := os.WriteFile(filepath.Join(secret, f), []byte("guest only"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return secret
}

// A directory of the source swapped for a symlink after the refresh checked
// the source: the copy must not follow it.
func TestWatchableCopyDoesNotFollowSymlinkSwappedAfterCheck(t *testing.T) {
	testroot.Require(t)
	root := t.TempDir()
	m := New(Options{StateRoot: filepath.Join(root, "run"), WatchInterval: time.Hour})
	t.Cleanup(func() { _ = m.ReleaseAll(context.Background()) })
	secret := guestSecret(t, root)
	src := filepath.Join(SharedDir(m.StateRoot()), "c1-abc-config")
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "sub", "key"), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(SharedDir(m.StateRoot()), "watchable", "c1-abc-config")
	if err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverWatchableBind, Source: src, MountPoint: mp}}); err != nil {
		t.Fatal(err)
	}
	// The host changes the file, so the next refresh copies it, and swaps
	// its directory in between.
	if err := os.WriteFile(filepath.Join(src, "sub", "key"), []byte("v2, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	swapAfterScan(t, filepath.Join(src, "sub"), secret)
	m.watch.refreshAll()
	if testHookAfterScan != nil {
		t.Fatal("the refresh did not reach its copy")
	}
	b, err := os.ReadFile(filepath.Join(mp, "sub", "key"))
	if string(b) == "guest only" {
		t.Fatal("a guest file reached the container's copy through a symlink swapped in after the check")
	}
	if err != nil || string(b) != "v1" {
		t.Errorf("the copy reads %q, %v; want the last good copy v1", b, err)
	}
	if _, err := os.Lstat(filepath.Join(mp, "sub", "other")); err == nil {
		t.Error("an entry of the guest directory appeared in the copy")
	}
}

// A source over Kata's limits is bind-mounted instead of copied: swapped
// for a symlink after the check, it must not bring the symlink's target
// into the container.
func TestWatchableBindFallbackDoesNotFollowSourceSwappedAfterCheck(t *testing.T) {
	testroot.Require(t)
	root := t.TempDir()
	m := New(Options{StateRoot: filepath.Join(root, "run"), WatchInterval: time.Hour})
	t.Cleanup(func() { _ = m.ReleaseAll(context.Background()) })
	before := mountTable(t)
	secret := guestSecret(t, root)
	src := filepath.Join(SharedDir(m.StateRoot()), "c1-abc-secrets")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range watchMaxEntries + 4 {
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d", i)), []byte("host"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	swapAfterScan(t, src, secret)
	mp := filepath.Join(SharedDir(m.StateRoot()), "watchable", "c1-abc-secrets")
	err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverWatchableBind, Source: src, MountPoint: mp}})
	if testHookAfterScan != nil {
		t.Fatal("the refresh did not reach its bind mount")
	}
	if b, rerr := os.ReadFile(filepath.Join(mp, "key")); rerr == nil {
		t.Fatalf("the guest directory was bind-mounted into the container's view: key reads %q", b)
	}
	if err == nil {
		// Bound: it must be the source that was checked.
		if b, rerr := os.ReadFile(filepath.Join(mp, "f0")); rerr != nil || string(b) != "host" {
			t.Errorf("the bind shows %q, %v; want the checked source", b, rerr)
		}
		if rerr := m.Release(context.Background(), "c1"); rerr != nil {
			t.Fatal(rerr)
		}
	}
	assertMountsUnchanged(t, before)
}

// A source that is a single file is copied as a file, through the
// descriptor the check opened.
func TestWatchableFileSource(t *testing.T) {
	testroot.Require(t)
	root := t.TempDir()
	m := New(Options{StateRoot: filepath.Join(root, "run"), WatchInterval: time.Hour})
	t.Cleanup(func() { _ = m.ReleaseAll(context.Background()) })
	src := filepath.Join(SharedDir(m.StateRoot()), "c1-abc-hosts")
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, []byte("v1"), 0o640); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(SharedDir(m.StateRoot()), "watchable", "c1-abc-hosts")
	if err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverWatchableBind, Source: src, MountPoint: mp}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, []byte("v2, longer"), 0o640); err != nil {
		t.Fatal(err)
	}
	m.watch.refreshAll()
	b, err := os.ReadFile(mp)
	if err != nil || string(b) != "v2, longer" {
		t.Fatalf("copy of a file source reads %q, %v", b, err)
	}
	if fi, err := os.Lstat(mp); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o640 {
		t.Fatalf("copy is %v, %v; want a regular file with mode 0640", fi.Mode(), err)
	}
}

// The copies live in the watcher's tmpfs, which containers see: should one
// replace a directory of its copy with a symlink (through a writable
// mount), the next refresh must not write through it.
func TestWatchableCopyDoesNotWriteThroughSymlinkInTheCopy(t *testing.T) {
	testroot.Require(t)
	root := t.TempDir()
	m := New(Options{StateRoot: filepath.Join(root, "run"), WatchInterval: time.Hour})
	t.Cleanup(func() { _ = m.ReleaseAll(context.Background()) })
	outside := filepath.Join(root, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(SharedDir(m.StateRoot()), "c1-abc-config")
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "sub", "key"), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(SharedDir(m.StateRoot()), "watchable", "c1-abc-config")
	if err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverWatchableBind, Source: src, MountPoint: mp}}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(mp, "sub")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(mp, "sub")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "sub", "key"), []byte("v2, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.watch.refreshAll()
	if entries, _ := os.ReadDir(outside); len(entries) > 0 {
		t.Fatalf("the refresh wrote through a symlink in the copy: %s holds %v", outside, entries)
	}
}
