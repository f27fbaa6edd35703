package initramfs

import (
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/wren-vm/wren/lib/kmod"
)

// writeConfig writes a .config that sets every DefaultModules option to
// "y" except those in override (name → value, "" for absent).
func writeConfig(t *testing.T, override map[string]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test .config\nCONFIG_MODULES=y\n")
	for _, m := range DefaultModules {
		v, ok := override[m]
		if !ok {
			v = "y"
		}
		if v != "" {
			b.WriteString("CONFIG_" + ModuleOptions[m] + "=" + v + "\n")
		}
	}
	for m, v := range override {
		if !contains(DefaultModules, m) && v != "" {
			b.WriteString("CONFIG_" + ModuleOptions[m] + "=" + v + "\n")
		}
	}
	p := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestModuleOptionsCoverTheModules(t *testing.T) {
	for _, m := range append(append([]string{}, DefaultModules...), ForbiddenModules...) {
		if ModuleOptions[m] == "" {
			t.Errorf("module %s has no Kconfig option in ModuleOptions", m)
		}
	}
}

// A kernel with every module built in (make kernel's) gets an initramfs
// with no module files and no load list, and needs no modules directory.
func TestBuildKernelConfigAllBuiltin(t *testing.T) {
	opts := Options{Init: staticInit(t), KernelConfig: writeConfig(t, nil)}
	_, recs := readBack(t, build(t, opts))
	if _, ok := recs[strings.TrimPrefix(kmod.ListPath, "/")]; ok {
		t.Error("load list written for a kernel with everything built in")
	}
	for name := range recs {
		if strings.HasPrefix(name, "lib/modules/") {
			t.Errorf("%s in the image of a kernel with everything built in", name)
		}
	}
	if _, ok := recs["init"]; !ok {
		t.Error("no /init")
	}
}

// A kernel's modules.builtin goes to /lib/modules/<release>/ so that the
// agent can answer CreateSandbox's kernel_modules for built-in modules.
func TestBuildKernelConfigModulesBuiltin(t *testing.T) {
	builtin := filepath.Join(t.TempDir(), "modules.builtin-wren")
	if err := os.WriteFile(builtin, []byte("kernel/drivers/block/virtio_blk.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := Options{Init: staticInit(t), KernelConfig: writeConfig(t, nil), ModulesBuiltin: builtin, KernelRelease: "6.1.192"}
	_, recs := readBack(t, build(t, opts))
	if r, ok := recs["lib/modules/6.1.192/modules.builtin"]; !ok || string(r.data) != "kernel/drivers/block/virtio_blk.ko\n" {
		t.Errorf("modules.builtin = %+v", r)
	}
	opts.KernelRelease = ""
	if err := Build(io.Discard, opts); err == nil || !strings.Contains(err.Error(), "kernel release") {
		t.Errorf("modules.builtin without a release: %v", err)
	}
}

// Options the kernel builds as modules are the only ones taken from the
// modules directory; options it lacks are left out.
func TestBuildKernelConfigSomeModules(t *testing.T) {
	k := debianKernel(t)
	cfg := writeConfig(t, map[string]string{"overlay": "m", "fuse": "m", "virtiofs": "m", "nfit": ""})
	_, recs := readBack(t, build(t, Options{Init: staticInit(t), ModulesDir: k.ModulesDir, KernelConfig: cfg}))
	list, ok := recs[strings.TrimPrefix(kmod.ListPath, "/")]
	if !ok {
		t.Fatal("no load list")
	}
	entries, err := kmod.ParseList(string(list.data))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, kmod.NameOf(e.Path))
	}
	sort.Strings(got)
	// Debian's virtiofs brings its dependencies fuse, virtio and
	// virtio_ring; none of the options set to "y" brings a module.
	if want := []string{"fuse", "overlay", "virtio", "virtio_ring", "virtiofs"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("modules %v, want %v", got, want)
	}
}

func TestBuildKernelConfigErrors(t *testing.T) {
	init := staticInit(t)
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"missing config", Options{Init: init, KernelConfig: "/nonexistent/config-wren"}, "kernel config"},
		{"module without dir", Options{Init: init, KernelConfig: writeConfig(t, map[string]string{"ext4": "m"})}, "[ext4] requested but no kernel modules directory"},
		{"loopback built in", Options{Init: init, KernelConfig: writeConfig(t, map[string]string{"vsock_loopback": "y"})}, "vsock_loopback built in"},
	}
	for _, c := range cases {
		err := Build(io.Discard, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}
