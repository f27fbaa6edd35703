package kconfig

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/rootfs-builder/kernelpkg"
)

const fragDir = ".." // guest-kernel-config/

// required is the list of what the guest kernel must have built in.
var required = []string{
	"VIRTIO_PCI", "VIRTIO_MMIO", "VIRTIO_VSOCKETS", "VIRTIO_FS", "FUSE_FS", "FUSE_DAX", "FS_DAX",
	"LIBNVDIMM", "BLK_DEV_PMEM", "VIRTIO_BLK", "SCSI_VIRTIO", "VIRTIO_NET",
	"CGROUPS", "CGROUP_SCHED", "MEMCG", "CGROUP_PIDS", "BLK_CGROUP", "CPUSETS", "CGROUP_FREEZER", "CGROUP_HUGETLB",
	"NAMESPACES", "UTS_NS", "IPC_NS", "USER_NS", "PID_NS", "NET_NS",
	"SECCOMP", "SECCOMP_FILTER", "OVERLAY_FS", "TMPFS", "DEVTMPFS", "NETFILTER", "NF_TABLES", "9P_FS", "NET_9P_VIRTIO",
}

func TestFragmentsCoverRequirements(t *testing.T) {
	for _, arch := range Arches {
		want, err := LoadFragments(fragDir, arch)
		if err != nil {
			t.Fatalf("%s: %v", arch, err)
		}
		byName := map[string]string{}
		for _, s := range want {
			byName[s.Name] = s.Value
		}
		for _, r := range required {
			if byName[r] != "y" {
				t.Errorf("%s: CONFIG_%s not requested as built in (%q)", arch, r, byName[r])
			}
		}
	}
	x86, _ := LoadFragments(fragDir, "x86_64")
	for _, s := range x86 {
		if s.Name == "PVH" && s.Value == "y" {
			return
		}
	}
	t.Error("x86_64 fragments lack CONFIG_PVH (QEMU boots the ELF vmlinux through it)")
}

// TestCheckMergedConfig checks a .config made by merging the fragments:
// nothing is reported; then each kind of defect is.
func TestCheckMergedConfig(t *testing.T) {
	want, err := LoadFragments(fragDir, "x86_64")
	if err != nil {
		t.Fatal(err)
	}
	var merged bytes.Buffer
	if err := Render(&merged, want); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(bytes.NewReader(merged.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if f := Check(want, cfg); len(f) != 0 {
		t.Fatalf("merged config does not satisfy its own fragments: %v", f)
	}
	delete(cfg, "VIRTIO_FS")
	cfg["VSOCKETS"] = "m"
	cfg["MODULES"] = "y"
	cfg["NR_CPUS"] = "8"
	got := map[string]string{}
	for _, f := range Check(want, cfg) {
		got[f.Want.Name] = f.Kind
	}
	if got["VIRTIO_FS"] != Absent || got["VSOCKETS"] != ModuleOnly || got["MODULES"] != Differs || len(got) != 3 {
		t.Errorf("findings = %v", got)
	}
}

// TestDebianConfigReport reports (does not fail on) what Debian's kernel
// has only as modules; it asserts facts the rootfs-builder relies on.
func TestDebianConfigReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := kernelpkg.Fetch(ctx, kernelpkg.Options{})
	if err != nil {
		t.Fatalf("fetch Debian kernel: %v", err)
	}
	have, err := ReadConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := LoadFragments(fragDir, "x86_64")
	findings := Check(want, have)
	kinds := map[string]string{}
	for _, f := range findings {
		t.Log(f)
		kinds[f.Want.Name] = f.Kind
	}
	t.Logf("Debian %s: %d of %d requested options not as requested", k.Version, len(findings), len(want))
	// Why the initramfs carries modules: vsock and virtio are modules in Debian.
	if kinds["VIRTIO_VSOCKETS"] != ModuleOnly || kinds["VIRTIO_PCI"] != ModuleOnly {
		t.Errorf("expected Debian to have virtio/vsock as modules: %v %v", kinds["VIRTIO_VSOCKETS"], kinds["VIRTIO_PCI"])
	}
	// Why the extracted vmlinux boots directly: PVH is built in.
	if _, bad := kinds["PVH"]; bad {
		t.Error("Debian's kernel lacks CONFIG_PVH")
	}
}

func TestLoadFragmentsErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "common"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "x86_64"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "common", "a.conf"), []byte("CONFIG_FOO=y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x86_64", "b.conf"), []byte("# comment\n\n# CONFIG_FOO is not set\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFragments(dir, "x86_64")
	if err == nil || !strings.Contains(err.Error(), "common/a.conf:1") || !strings.Contains(err.Error(), "x86_64/b.conf:3") {
		t.Errorf("conflict: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x86_64", "b.conf"), []byte("CONFIG_FOO=y\nFOO=y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFragments(dir, "x86_64"); err == nil || !strings.Contains(err.Error(), "b.conf:2") {
		t.Errorf("garbage line: %v", err)
	}
	if _, err := LoadFragments(dir, "sparc"); err == nil {
		t.Error("unknown arch accepted")
	}
	if _, err := LoadFragments(t.TempDir(), "arm64"); err == nil {
		t.Error("empty fragment dir accepted")
	}
}

// FuzzParseFragment checks that parsing never panics and that what parses
// renders back to the same settings.
func FuzzParseFragment(f *testing.F) {
	f.Add("CONFIG_A=y\n# CONFIG_B is not set\n# comment\nCONFIG_C=\"str\"\n")
	f.Add("CONFIG_=y\nFOO")
	f.Fuzz(func(t *testing.T, data string) {
		s, err := ParseFragment("f", strings.NewReader(data))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := Render(&buf, s); err != nil {
			t.Fatal(err)
		}
		again, err := ParseFragment("f", &buf)
		if err != nil || len(again) != len(s) {
			t.Fatalf("round trip: %v, %d vs %d settings", err, len(again), len(s))
		}
		for i := range s {
			if again[i].Name != s[i].Name || again[i].Value != s[i].Value {
				t.Fatalf("round trip changed %v to %v", s[i], again[i])
			}
		}
	})
}
