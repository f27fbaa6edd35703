package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestWatchableBindCopiesRefreshesAndFallsBack(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	// A long interval: the test drives refreshes itself instead of sleeping.
	m := New(Options{StateRoot: filepath.Join(root, "run"), WatchInterval: time.Hour})
	t.Cleanup(func() { m.ReleaseAll(context.Background()) })
	before := mountTable(t)

	src := filepath.Join(SharedDir(m.StateRoot()), "c1-abc-config")
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
	if _, err := os.Stat(watchDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("watchable dirs left: %v", err)
	}
}

func TestWatchableBindSourceConfinedToSharedDir(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	m := New(Options{StateRoot: filepath.Join(root, "run"), WatchInterval: time.Hour})
	t.Cleanup(func() { m.ReleaseAll(context.Background()) })
	before := mountTable(t)
	shared := SharedDir(m.StateRoot())
	watchDir := filepath.Join(shared, "watchable")
	secret := filepath.Join(root, "guest-secret")
	os.MkdirAll(secret, 0o700)
	os.WriteFile(filepath.Join(secret, "key"), []byte("guest only"), 0o600)
	os.MkdirAll(shared, 0o755)
	os.Symlink(secret, filepath.Join(shared, "link-out"))

	cases := []struct {
		name, source string
		code         codes.Code
	}{
		{"outside", secret, codes.InvalidArgument},
		{"dot-dot out of the shared dir", filepath.Join(shared, "..", "..", "..", "guest-secret"), codes.InvalidArgument},
		{"symlink in the shared dir pointing out", filepath.Join(shared, "link-out"), codes.InvalidArgument},
		{"relative", "c1-config", codes.InvalidArgument},
		{"missing", filepath.Join(shared, "nothing"), codes.NotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverWatchableBind, Source: c.source, MountPoint: filepath.Join(watchDir, "c1-x")}})
			if got := status.Code(err); got != c.code {
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
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "key"), []byte("v1"), 0o644)
	mp := filepath.Join(watchDir, "c1-config")
	if err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverWatchableBind, Source: src, MountPoint: mp}}); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(src)
	os.Symlink(secret, src)
	m.watch.refreshAll()
	if b, err := os.ReadFile(filepath.Join(mp, "key")); err != nil || string(b) != "v1" {
		t.Fatalf("after the swap the copy reads %q, %v; want the last good copy v1", b, err)
	}
	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
}
