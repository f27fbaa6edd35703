package scripts

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// kernelBuild runs guest-kernel-config/build.sh with apt-cache and apt-get
// replaced: apt-cache reports candidate as linux-source-6.1's version and
// apt-get fails, so a run that tries to download (to build) fails loudly.
type kernelBuild struct {
	t                       *testing.T
	cache, work, out, shims string
	fragments               string
}

func newKernelBuild(t *testing.T) *kernelBuild {
	t.Helper()
	k := &kernelBuild{t: t, cache: t.TempDir(), work: t.TempDir(), out: t.TempDir(), shims: t.TempDir(),
		fragments: filepath.Join(repoRoot(t), "guest-kernel-config")}
	k.candidate("6.1.192-3")
	writeScript(t, filepath.Join(k.shims, "apt-get"), "echo apt-get was called: \"$@\" >&2; exit 1")
	return k
}

func (k *kernelBuild) candidate(v string) {
	writeScript(k.t, filepath.Join(k.shims, "apt-cache"), "echo 'linux-source-6.1:'; echo '  Candidate: "+v+"'")
}

func (k *kernelBuild) run(arch string, args ...string) (string, error) {
	k.t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(k.t), "guest-kernel-config", "build.sh"), args...)
	cmd.Env = append(os.Environ(), "PATH="+k.shims+":"+os.Getenv("PATH"), "ARCH="+arch,
		"KERNEL_CACHE_DIR="+k.cache, "KERNEL_BUILD_DIR="+k.work, "OUT="+k.out, "KERNEL_FRAGMENTS="+k.fragments)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

func (k *kernelBuild) key(arch string) string {
	k.t.Helper()
	out, err := k.run(arch, "--print-key")
	if err != nil {
		k.t.Fatalf("build.sh --print-key: %v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

// The cache key follows the merged config and the source version, and
// nothing else: the same inputs give the same key; another source version,
// a changed fragment or the other architecture another.
func TestKernelCacheKey(t *testing.T) {
	k := newKernelBuild(t)
	base := k.key("x86_64")
	if len(base) != 16 || k.key("x86_64") != base {
		t.Fatalf("key %q is not stable", base)
	}
	if k.key("arm64") == base {
		t.Error("arm64 has the x86_64 key")
	}
	k.candidate("6.1.999-1")
	if k.key("x86_64") == base {
		t.Error("a new source version keeps the key")
	}
	k.candidate("6.1.192-3")
	frag := t.TempDir()
	if err := os.CopyFS(frag, os.DirFS(k.fragments)); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(frag, "common", "base.conf")
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, append(b, "CONFIG_WREN_TEST_OPTION=y\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	k.fragments = frag
	if k.key("x86_64") == base {
		t.Error("a changed fragment keeps the key")
	}
}

// With the key's entry in the cache, make kernel copies it into out/ and
// downloads and builds nothing; without it, it goes for the source.
func TestKernelCacheHit(t *testing.T) {
	k := newKernelBuild(t)
	entry := filepath.Join(k.cache, "x86_64-"+k.key("x86_64"))
	if err := os.MkdirAll(entry, 0o755); err != nil {
		t.Fatal(err)
	}
	files := []string{"bzImage-wren", "config-wren", "modules.builtin-wren", "meta"}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(entry, f), []byte("cached "+f+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An ELF with a symbol table stands in for vmlinux: a program go
	// build links (go test links its binaries without one).
	src := filepath.Join(t.TempDir(), "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(entry, "vmlinux-wren"), src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	out, err := k.run("x86_64")
	if err != nil || !strings.Contains(out, "kernel: cached in "+entry) {
		t.Fatalf("build.sh with a warm cache: %v\n%s", err, out)
	}
	for _, f := range files[:3] {
		if b, err := os.ReadFile(filepath.Join(k.out, f)); err != nil || string(b) != "cached "+f+"\n" {
			t.Errorf("out/%s = %q, %v", f, b, err)
		}
	}
	// out/ gets vmlinux without its symbol table; the cache keeps it.
	if !hasSymtab(t, filepath.Join(entry, "vmlinux-wren")) {
		t.Fatal("the stand-in vmlinux has no symbol table to strip")
	}
	if hasSymtab(t, filepath.Join(k.out, "vmlinux-wren")) {
		t.Error("out/vmlinux-wren still has its symbol table")
	}
	// Another source version misses the cache: build.sh goes to download it.
	k.candidate("6.1.999-1")
	out, err = k.run("x86_64")
	if err == nil || !strings.Contains(out, "apt-get was called: download -q linux-source-6.1=6.1.999-1") {
		t.Errorf("build.sh on a cache miss: %v\n%s", err, out)
	}
}

// hasSymtab reports whether the ELF file at path has a .symtab section.
func hasSymtab(t *testing.T, path string) bool {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	return f.Section(".symtab") != nil
}
