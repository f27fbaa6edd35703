package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWatchableBindCopiesRefreshesAndFallsBack(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	// A long interval: the test drives refreshes itself instead of sleeping.
	m := New(Options{StateRoot: filepath.Join(root, "run"), WatchInterval: time.Hour})
	t.Cleanup(func() { m.ReleaseAll(context.Background()) })
	before := mountTable(t)

	src := filepath.Join(root, "configmap")
	os.MkdirAll(filepath.Join(src, "..2026_data"), 0o755)
	os.WriteFile(filepath.Join(src, "..2026_data/key"), []byte("v1"), 0o644)
	os.Symlink("..2026_data", filepath.Join(src, "..data"))
	os.Symlink("..data/key", filepath.Join(src, "key"))

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
	os.MkdirAll(filepath.Join(src, "..2027_data"), 0o755)
	os.WriteFile(filepath.Join(src, "..2027_data/key"), []byte("v2"), 0o644)
	os.Remove(filepath.Join(src, "..data"))
	os.Symlink("..2027_data", filepath.Join(src, "..data"))
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
		os.WriteFile(filepath.Join(src, fmt.Sprintf("extra%d", i)), []byte("x"), 0o644)
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
	if _, err := os.Stat(filepath.Join(root, "run")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("watchable dirs left: %v", err)
	}
}
