package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLIInitramfsReproducible(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox-static not installed")
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.gz"), filepath.Join(dir, "b.gz")
	for _, out := range []string{a, b} {
		var stderr bytes.Buffer
		err := run(context.Background(), []string{"initramfs", "--agent", "/bin/busybox", "--kernel-modules", "fetch", "--out", out, "--profile", "debug"}, &bytes.Buffer{}, &stderr)
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "modules (with dependencies)") {
			t.Errorf("no progress: %s", stderr.String())
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if len(da) == 0 || !bytes.Equal(da, db) {
		t.Fatal("two CLI builds differ")
	}
}

// --compress none writes a plain newc cpio.
func TestCLIInitramfsUncompressed(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox-static not installed")
	}
	out := filepath.Join(t.TempDir(), "initrd.cpio")
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"initramfs", "--agent", "/bin/busybox", "--out", out, "--compress", "none"}, &bytes.Buffer{}, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("070701")) {
		t.Errorf("output starts with %q, want a newc cpio header", b[:min(len(b), 6)])
	}
}

func TestCLIErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args  []string
		usage bool
		want  string
	}{
		{nil, true, "no command"},
		{[]string{"bake"}, true, "unknown command"},
		{[]string{"initramfs", "--out", "x"}, true, "--agent and --out"},
		{[]string{"initramfs", "--agent", "/nonexistent/wren-agent", "--out", filepath.Join(dir, "x")}, false, "make agent"},
		{[]string{"image", "--agent", "/bin/busybox", "--kernel-modules", "/nonexistent/modules", "--out", filepath.Join(dir, "x")}, false, "/nonexistent/modules"},
		{[]string{"initramfs", "--agent", "/bin/busybox", "--out", filepath.Join(dir, "x"), "--file", "bad"}, true, "GUEST=HOST"},
		{[]string{"initramfs", "--agent", "/bin/busybox", "--out", filepath.Join(dir, "x"), "--compress", "xz"}, false, "unknown compression"},
	}
	for _, c := range cases {
		err := run(context.Background(), c.args, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) || errors.Is(err, errUsage) != c.usage {
			t.Errorf("%v: err = %v", c.args, err)
		}
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if err := run(context.Background(), []string{"initramfs", "--agent", "/bin/busybox", "--out", filepath.Join(dir, "x")}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: %v", err)
	}
}

func TestCLIKernel(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"kernel"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"vmlinux=/", "modules=/", "version=6."} {
		if !strings.Contains(out.String(), key) {
			t.Errorf("kernel output lacks %q:\n%s", key, out.String())
		}
	}
}
