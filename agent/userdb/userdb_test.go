package userdb

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/wren-vm/wren/agent/errdefs"
)

func rootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n# a comment\nbroken line\napp:x:1000:1000::/home/app:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n",
		"etc/group":  "root:x:0:\napp:x:1000:\nwheel:x:10:app,root\naudio:x:29:app\nwww-data:x:33:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestResolve(t *testing.T) {
	root := rootfs(t)
	for _, c := range []struct {
		name string
		spec Spec
		want IDs
	}{
		{"name", Spec{User: "app"}, IDs{UID: 1000, GID: 1000, AdditionalGIDs: []uint32{10, 29}}},
		{"uid listed", Spec{User: "1000"}, IDs{UID: 1000, GID: 1000, AdditionalGIDs: []uint32{10, 29}}},
		{"uid not listed", Spec{User: "4242"}, IDs{UID: 4242}},
		{"group by name", Spec{User: "app", Group: "www-data"}, IDs{UID: 1000, GID: 33, AdditionalGIDs: []uint32{10, 29}}},
		{"group by number", Spec{User: "web", Group: "500"}, IDs{UID: 33, GID: 500}},
		{"additional", Spec{User: "web", Additional: []string{"audio", "77"}}, IDs{UID: 33, GID: 33, AdditionalGIDs: []uint32{29, 77}}},
	} {
		got, err := Resolve(root, c.spec)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got.UID != c.want.UID || got.GID != c.want.GID || !slices.Equal(got.AdditionalGIDs, c.want.AdditionalGIDs) {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
	for _, s := range []Spec{{User: "nobody"}, {User: "app", Group: "nogroup"}, {User: "app", Additional: []string{"video"}}, {}} {
		if _, err := Resolve(root, s); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
			t.Errorf("%+v: %v, want an invalid argument", s, err)
		}
	}
}

// TestResolveStaysInTheRootfs: an /etc/passwd that is a symlink to an
// absolute path is read inside the root filesystem, never from the guest's
// own files.
func TestResolveStaysInTheRootfs(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "passwd"), []byte("escapee:x:7:7::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "passwd"), filepath.Join(root, "etc", "passwd")); err != nil {
		t.Fatal(err)
	}
	if ids, err := Resolve(root, Spec{User: "escapee"}); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Fatalf("resolved through a symlink out of the rootfs: %+v %v", ids, err)
	}
}
