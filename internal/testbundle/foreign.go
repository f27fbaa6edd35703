package testbundle

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ForeignBusyboxDir caches the busybox binaries of other architectures.
var ForeignBusyboxDir = "/var/cache/wren/busybox"

// ForeignBusybox returns the static busybox of Debian's busybox-static for
// a Debian architecture (e.g. "arm64"), for the root filesystems of guests
// of that architecture. It cannot be installed beside the host's (both are
// /bin/busybox), so it is fetched with `apt-get download
// busybox-static:ARCH`, which needs the architecture added to dpkg
// (scripts/install-deps.sh arm64 does that), unpacked, and cached.
func ForeignBusybox(t testing.TB, arch string) string {
	t.Helper()
	p, err := foreignBusybox(context.Background(), arch)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func foreignBusybox(ctx context.Context, arch string) (string, error) {
	out := filepath.Join(ForeignBusyboxDir, arch, "busybox")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", fmt.Errorf("busybox for %s: %w", arch, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".fetch-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	dl := exec.CommandContext(ctx, "apt-get", "download", "-q", "busybox-static:"+arch)
	dl.Dir = tmp
	if b, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download busybox-static:%s: %w\n%s(scripts/install-deps.sh arm64 adds the architecture)", arch, err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "busybox-static_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("busybox-static:%s: downloaded %v", arch, debs)
	}
	if b, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], filepath.Join(tmp, "root")).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %w\n%s", debs[0], err, b)
	}
	// Renamed into place: a concurrent fetch finds a whole file or none.
	if err := os.Rename(filepath.Join(tmp, "root", "bin", "busybox"), out); err != nil {
		return "", fmt.Errorf("busybox for %s: %w", arch, err)
	}
	return out, nil
}
