// Package kmodload loads kernel modules in the guest from the load list the
// rootfs-builder writes into the image (its format: lib/kmod's ParseList):
// one module path per line, already in dependency order, each loaded with
// finit_module(2). There is no modprobe
// or depmod in the guest; dependencies were resolved when the image was
// built. Both the agent (as PID 1) and small test inits use it.
package kmodload

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/lib/kmod"
)

// ReadList reads and parses the load list at path.
func ReadList(path string) ([]kmod.Entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("module list: %w", err)
	}
	entries, err := kmod.ParseList(string(b))
	if err != nil {
		return nil, fmt.Errorf("module list %s: %w", path, err)
	}
	return entries, nil
}

// Load loads one module file with finit_module. A module that is already
// loaded (EEXIST) is not an error.
func Load(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}

// LoadList loads every module of the list at path in order. A failing
// module does not stop the rest (a module that needs it fails on its own);
// the returned error joins every failure. loaded counts the modules now
// present, including ones that were already loaded.
func LoadList(path string) (loaded int, err error) {
	entries, err := ReadList(path)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, e := range entries {
		if err := Load(e.Path, e.Params); err != nil {
			errs = append(errs, err)
			continue
		}
		loaded++
	}
	return loaded, errors.Join(errs...)
}

// ModulesDir is where the running kernel's modules live:
// /lib/modules/<release>.
func ModulesDir() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return "/lib/modules/" + unix.ByteSliceToString(u.Release[:]), nil
}

// Errors of LoadByName, for mapping to RPC status codes: ErrInvalidName
// (InvalidArgument) and kmod.ErrNotFound (NotFound); anything else is the
// kernel refusing the module.
var ErrInvalidName = errors.New("invalid module name")

// LoadByName loads the module called name from dir (a /lib/modules/<release>
// tree; ModulesDir() when empty) after every module it depends on, as read
// from the modules' own .modinfo. It serves CreateSandbox's kernel_modules.
// params apply to the named module only. Modules built into the kernel or
// already loaded are not an error.
func LoadByName(dir, name string, params []string) error {
	if dir == "" {
		var err error
		if dir, err = ModulesDir(); err != nil {
			return err
		}
	}
	if name == "" || strings.ContainsAny(name, "/ \x00") {
		return fmt.Errorf("load module %q: %w", name, ErrInvalidName)
	}
	ix, err := kmod.Scan(dir)
	if err != nil {
		return fmt.Errorf("load module %s: %w", name, err)
	}
	if ix.Builtin(name) {
		return nil
	}
	mods, err := ix.Resolve([]string{name})
	if err != nil {
		return fmt.Errorf("load module %s: %w", name, err)
	}
	for i, m := range mods {
		p := ""
		if i == len(mods)-1 {
			p = strings.Join(params, " ")
		}
		if strings.HasSuffix(m.Path, ".ko") {
			err = Load(filepath.Join(dir, m.Path), p)
		} else {
			err = loadCompressed(m, p)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// loadCompressed loads a compressed module from its decompressed bytes
// with init_module, since finit_module would need kernel decompression.
func loadCompressed(m *kmod.Module, params string) error {
	data, err := m.Contents()
	if err != nil {
		return err
	}
	if err := unix.InitModule(data, params); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("init_module %s: %w", m.Name, err)
	}
	return nil
}
