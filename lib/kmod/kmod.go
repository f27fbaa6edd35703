// Package kmod finds Linux kernel modules in an unpacked /lib/modules/<ver>
// tree and resolves the dependency closure of a set of modules from each
// module's own .modinfo section, without modules.dep: Debian's linux-image
// packages ship none (depmod makes it at install time), and the guest runs
// no depmod or modprobe.
//
// Compression: Debian bookworm's linux-image-6.1 ships plain .ko files
// (CONFIG_MODULE_COMPRESS_NONE). Trees with .ko.xz or .ko.gz modules (other
// distributions, newer Debian) are supported by decompressing at build time,
// so the image always holds plain .ko files and the guest can load them with
// finit_module(fd, "", 0): the kernel's in-kernel decompression
// (MODULE_INIT_COMPRESSED_FILE) needs CONFIG_MODULE_DECOMPRESS, which not
// every guest kernel has. .ko.zst is rejected with a clear error.
package kmod

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ulikunitz/xz"
)

// Module is one kernel module file in a modules tree.
type Module struct {
	// Name is the module name as the kernel knows it ('-' folded to '_').
	Name string
	// Path is the file's path relative to the modules directory, e.g.
	// "kernel/fs/fuse/virtiofs.ko" (or ".ko.xz" before decompression).
	Path string
	// Depends lists the names of the modules it needs, from .modinfo.
	Depends []string
	// SoftPre lists "softdep=pre:" names; only those naming a module file
	// are followed (aliases such as "crypto-crc32c" cannot be resolved
	// without an alias index).
	SoftPre []string
	dir     string
}

// Index maps module names to files of one modules directory.
type Index struct {
	Dir     string
	files   map[string]string // name → relative path
	builtin map[string]bool
	loaded  map[string]*Module
}

// Suffixes a module file may have, plain first.
var suffixes = []string{".ko", ".ko.xz", ".ko.gz", ".ko.zst"}

// NameOf returns the module name for a file name such as "virtio-rng.ko.xz".
func NameOf(file string) string {
	base := filepath.Base(file)
	for _, s := range suffixes {
		if strings.HasSuffix(base, s) {
			base = strings.TrimSuffix(base, s)
			break
		}
	}
	return strings.ReplaceAll(base, "-", "_")
}

func isModuleFile(name string) bool {
	for _, s := range suffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// Scan indexes the module files under dir (a /lib/modules/<version>
// directory). It reads only names; .modinfo is read on demand.
func Scan(dir string) (*Index, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("kernel modules directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("kernel modules directory %s is not a directory", dir)
	}
	ix := &Index{Dir: dir, files: map[string]string{}, builtin: map[string]bool{}, loaded: map[string]*Module{}}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !isModuleFile(d.Name()) {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := NameOf(rel)
		if old, ok := ix.files[name]; ok {
			return fmt.Errorf("module %s found twice: %s and %s", name, old, rel)
		}
		ix.files[name] = rel
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", dir, err)
	}
	// modules.builtin names modules compiled into the kernel: requesting
	// one is not an error, it just needs no file. A kernel with everything
	// built in has only this list.
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				ix.builtin[NameOf(line)] = true
			}
		}
	}
	if len(ix.files) == 0 && len(ix.builtin) == 0 {
		return nil, fmt.Errorf("no kernel modules (*.ko) and no modules.builtin under %s", dir)
	}
	return ix, nil
}

// Len returns the number of module files indexed.
func (ix *Index) Len() int { return len(ix.files) }

// Builtin reports whether name is compiled into the kernel.
func (ix *Index) Builtin(name string) bool { return ix.builtin[normalize(name)] }

func normalize(name string) string { return strings.ReplaceAll(strings.TrimSpace(name), "-", "_") }

// Module returns the module called name with its .modinfo read.
func (ix *Index) Module(name string) (*Module, error) {
	name = normalize(name)
	if m, ok := ix.loaded[name]; ok {
		return m, nil
	}
	rel, ok := ix.files[name]
	if !ok {
		if ix.builtin[name] {
			return nil, fmt.Errorf("module %s: %w", name, ErrBuiltin)
		}
		return nil, fmt.Errorf("module %s: %w under %s", name, ErrNotFound, ix.Dir)
	}
	m := &Module{Name: name, Path: rel, dir: ix.Dir}
	data, err := m.Contents()
	if err != nil {
		return nil, err
	}
	info, err := Modinfo(data)
	if err != nil {
		return nil, fmt.Errorf("module %s (%s): %w", name, rel, err)
	}
	if n := info["name"]; len(n) > 0 && normalize(n[0]) != name {
		return nil, fmt.Errorf("module file %s declares name %q", rel, n[0])
	}
	for _, d := range info["depends"] {
		for _, dep := range strings.Split(d, ",") {
			if dep = normalize(dep); dep != "" {
				m.Depends = append(m.Depends, dep)
			}
		}
	}
	for _, s := range info["softdep"] {
		m.SoftPre = append(m.SoftPre, softPre(s)...)
	}
	ix.loaded[name] = m
	return m, nil
}

// softPre extracts the names after "pre:" in a softdep value such as
// "pre: crc32c post: foo".
func softPre(v string) []string {
	var out []string
	in := false
	for _, f := range strings.Fields(v) {
		switch f {
		case "pre:":
			in = true
		case "post:":
			in = false
		default:
			if in {
				out = append(out, normalize(f))
			}
		}
	}
	return out
}

// Errors of Module and Resolve.
var (
	ErrNotFound = errors.New("not found")
	ErrBuiltin  = errors.New("built into the kernel")
)

// Resolve returns the modules named and everything they depend on, each
// after all of its dependencies; ties keep the order of names. Names built
// into the kernel are skipped. A name that is neither a file nor built in
// is an error naming it.
func (ix *Index) Resolve(names []string) ([]*Module, error) {
	var order []*Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		case 2:
			return nil
		}
		m, err := ix.Module(name)
		if errors.Is(err, ErrBuiltin) {
			state[name] = 2
			return nil
		}
		if err != nil {
			if len(chain) > 0 {
				return fmt.Errorf("%w (needed by %s)", err, strings.Join(chain, " <- "))
			}
			return err
		}
		state[name] = 1
		chain = append(chain, name)
		for _, dep := range m.SoftPre {
			if _, ok := ix.files[dep]; ok {
				if err := visit(dep, chain); err != nil {
					return err
				}
			}
		}
		deps := append([]string(nil), m.Depends...)
		sort.Strings(deps)
		for _, dep := range deps {
			if err := visit(dep, chain); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, m)
		return nil
	}
	for _, n := range names {
		if err := visit(normalize(n), nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// InstallPath is where the module is stored in an image: its path relative
// to the modules directory with any compression suffix dropped.
func (m *Module) InstallPath() string {
	p := m.Path
	for _, s := range suffixes[1:] {
		if strings.HasSuffix(p, s) {
			return strings.TrimSuffix(p, s) + ".ko"
		}
	}
	return p
}

// maxModuleSize bounds decompression so a corrupt file cannot exhaust memory.
const maxModuleSize = 256 << 20

// Contents returns the module's ELF bytes, decompressed.
func (m *Module) Contents() ([]byte, error) {
	f, err := os.Open(filepath.Join(m.dir, m.Path))
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", m.Name, err)
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(m.Path, ".ko.xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("module %s: xz: %w", m.Name, err)
		}
		r = xr
	case strings.HasSuffix(m.Path, ".ko.gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("module %s: gzip: %w", m.Name, err)
		}
		defer gr.Close()
		r = gr
	case strings.HasSuffix(m.Path, ".ko.zst"):
		return nil, fmt.Errorf("module %s: zstd-compressed modules are not supported; decompress the tree first (zstd -d)", m.Name)
	}
	data, err := io.ReadAll(io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("module %s: read %s: %w", m.Name, m.Path, err)
	}
	if len(data) > maxModuleSize {
		return nil, fmt.Errorf("module %s: larger than %d bytes", m.Name, maxModuleSize)
	}
	return data, nil
}

// Modinfo parses the .modinfo section of a module's ELF bytes: NUL-separated
// "key=value" strings. Keys may repeat (alias=, parm=).
func Modinfo(elfData []byte) (map[string][]string, error) {
	f, err := elf.NewFile(bytes.NewReader(elfData))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	raw, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo: %w", err)
	}
	info := map[string][]string{}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte("="))
		if !ok || len(k) == 0 {
			continue
		}
		info[string(k)] = append(info[string(k)], string(v))
	}
	return info, nil
}
