package kmodload

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wren-vm/wren/lib/kmod"
)

// TestLoadListFailures exercises the error paths on the host, where loading
// a real module is impossible (the host kernel is not the guest kernel);
// the guest boot tests load real modules through this package.
func TestLoadListFailures(t *testing.T) {
	dir := t.TempDir()
	notModule := filepath.Join(dir, "junk.ko")
	if err := os.WriteFile(notModule, []byte("not an ELF module"), 0o644); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(dir, "modules.load")
	if err := os.WriteFile(list, []byte(filepath.Join(dir, "missing.ko")+"\n"+notModule+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := LoadList(list)
	if n != 0 || err == nil {
		t.Fatalf("LoadList = %d, %v", n, err)
	}
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.ko") || !strings.Contains(err.Error(), "junk.ko") {
		t.Errorf("error does not name both failures: %v", err)
	}
	if _, err := LoadList(filepath.Join(dir, "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing list: %v", err)
	}
}

func TestLoadByNameErrors(t *testing.T) {
	if err := LoadByName(t.TempDir(), "a/b", nil); !errors.Is(err, ErrInvalidName) {
		t.Errorf("path-like name: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "junk.ko"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/fs/ext4/ext4.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := LoadByName(dir, "ext4", nil); err != nil {
		t.Errorf("builtin module: %v", err)
	}
	if err := LoadByName(dir, "nope", nil); !errors.Is(err, kmod.ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing module: %v", err)
	}
	if err := LoadByName(dir, "junk", nil); err == nil || !strings.Contains(err.Error(), "ELF") {
		t.Errorf("broken module: %v", err)
	}
}
