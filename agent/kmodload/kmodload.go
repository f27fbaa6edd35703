// Package kmodload loads kernel modules in the guest from the load list the
// rootfs-builder writes into the image: one module path per line, already in
// dependency order, each loaded with finit_module(2). There is no modprobe
// or depmod in the guest; dependencies were resolved when the image was
// built. Both the agent (as PID 1) and small test inits use it.
package kmodload

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ListPath is where the image keeps the module load list.
const ListPath = "/etc/wren/modules.load"

// Entry is one line of a load list: an absolute module path and optional
// module parameters ("key=value ...").
type Entry struct {
	Path   string
	Params string
}

// ParseList parses a load list. Blank lines and lines starting with '#' are
// skipped; a line is "<path>" or "<path> <params...>".
func ParseList(data string) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(strings.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		path, params, _ := strings.Cut(line, " ")
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("line %d: module path %q is not absolute", n, path)
		}
		out = append(out, Entry{Path: path, Params: strings.TrimSpace(params)})
	}
	return out, sc.Err()
}

// ReadList reads and parses the load list at path.
func ReadList(path string) ([]Entry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("module list: %w", err)
	}
	entries, err := ParseList(string(b))
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
