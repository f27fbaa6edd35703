package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestARM64Config(t *testing.T) {
	dir := t.TempDir()
	k := filepath.Join(dir, "k")
	if err := os.WriteFile(k, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := Config{Dir: dir, Kernel: k, Initrd: k, Arch: ArchARM64, Accel: "kvm", Vsockd: "/bin/true", Virtiofsd: "/bin/true", QEMU: "/bin/true"}
	if err := c.fill(); err != nil {
		t.Fatal(err)
	}
	// An x86 host runs an arm64 guest only under TCG, without x86 firmware.
	if c.Accel != "tcg" || c.Firmware != "" {
		t.Errorf("arm64: accel %q, firmware %q", c.Accel, c.Firmware)
	}
	args := strings.Join(qemuArgs(&c, c.Accel), " ")
	for _, want := range []string{
		"-machine virt,gic-version=3,accel=tcg,memory-backend=ram ", "-cpu max,pauth-impdef=on",
		"memory-backend-memfd,id=ram,size=512M,share=on", "vhost-user-vsock-pci,chardev=vsock",
		"vhost-user-fs-pci,chardev=virtiofs,tag=kataShared", "console=ttyAMA0",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("arm64 QEMU args lack %q:\n%s", want, args)
		}
	}
	if strings.Contains(args, "q35") || strings.Contains(args, "-bios") || strings.Contains(args, "ttyS0") {
		t.Errorf("x86 machine pieces in the arm64 args:\n%s", args)
	}
	c = Config{Dir: dir, Kernel: k, Initrd: k, Arch: ArchARM64, Vsockd: "/bin/true", Virtiofsd: "/bin/true"}
	if err := c.fill(); err != nil || filepath.Base(c.QEMU) != DefaultQEMUARM64 {
		t.Errorf("arm64 QEMU = %q (%v), want %s", c.QEMU, err, DefaultQEMUARM64)
	}
	for name, c := range map[string]Config{
		"nvdimm on arm64": {Dir: dir, Kernel: k, Initrd: k, Arch: ArchARM64, Image: k},
		"unknown arch":    {Dir: dir, Kernel: k, Initrd: k, Arch: "sparc"},
	} {
		if err := c.fill(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestKernelRelease(t *testing.T) {
	k := filepath.Join(t.TempDir(), "vmlinux-wren")
	if err := os.WriteFile(k, []byte("\x7fELF...\x00Linux version 6.1.192 (wren@wren) (gcc) #1 SMP\n\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err := KernelRelease(k); err != nil || r != "6.1.192" {
		t.Errorf("release %q, %v", r, err)
	}
	if err := os.WriteFile(k, []byte("compressed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := KernelRelease(k); err == nil {
		t.Error("no banner accepted")
	}
	for in, want := range map[string]string{
		"/o/vmlinux-wren": "/o/config-wren", "/o/Image-wren-arm64": "/o/config-wren-arm64",
		"/o/bzImage-x": "/o/config-x", "/o/vmlinux": "", "/o/Image-": "",
	} {
		if got := ConfigBeside(in); got != want {
			t.Errorf("ConfigBeside(%s) = %q, want %q", in, got, want)
		}
	}
}

// The agent must match the guest: an x86 agent in an arm64 image makes
// the kernel panic at /init.
func TestBuildArtifactsForChecksTheAgent(t *testing.T) {
	_, err := BuildArtifactsFor(t.Context(), ArtifactOptions{Agent: "/bin/true", Dir: t.TempDir(), Kernel: KernelWren, Arch: ArchARM64})
	if err == nil || !strings.Contains(err.Error(), "built for EM_X86_64") {
		t.Errorf("x86 agent for arm64: %v", err)
	}
	_, err = BuildArtifactsFor(t.Context(), ArtifactOptions{Agent: "/bin/true", Dir: t.TempDir(), Arch: ArchARM64})
	if err == nil || !strings.Contains(err.Error(), "x86_64 only") {
		t.Errorf("Debian's kernel on arm64: %v", err)
	}
}
