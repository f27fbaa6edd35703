package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Guest hook kinds: the subdirectories of CreateSandbox's guest_hook_path
// that hold hooks, as Kata's agent reads them.
const (
	hookPrestart  = "prestart"
	hookPoststart = "poststart"
	hookPoststop  = "poststop"
)

// findGuestHooks reads the OCI hooks below dir (guest_hook_path): every
// executable regular file in dir/prestart, dir/poststart and dir/poststop,
// in name order, run with its own name and the hook kind as arguments, as
// Kata's agent runs them. A missing kind directory holds no hooks; a
// missing dir is an error (CreateSandbox logs it and goes on, as Kata).
func findGuestHooks(dir string) (*specs.Hooks, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("guest hook path %q is not absolute", dir)
	}
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("guest hook path: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("guest hook path %s is not a directory", dir)
	}
	h := &specs.Hooks{}
	for _, kind := range []string{hookPrestart, hookPoststart, hookPoststop} {
		found, err := hooksIn(filepath.Join(dir, kind), kind)
		if err != nil {
			return nil, err
		}
		switch kind {
		case hookPrestart:
			h.Prestart = found //nolint:staticcheck // the kind Kata's guest hooks are
		case hookPoststart:
			h.Poststart = found
		case hookPoststop:
			h.Poststop = found
		}
	}
	return h, nil
}

// hooksIn lists the hooks of one kind directory.
func hooksIn(dir, kind string) ([]specs.Hook, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("guest hooks: %w", err)
	}
	var out []specs.Hook
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			continue // as Kata: only executable regular files are hooks
		}
		out = append(out, specs.Hook{Path: filepath.Join(dir, e.Name()), Args: []string{e.Name(), kind}})
	}
	return out, nil
}

// addGuestHooks appends the sandbox's guest hooks to the spec's, after
// the hooks the spec brings.
func addGuestHooks(spec *specs.Spec, guest *specs.Hooks) {
	if guest == nil {
		return
	}
	if spec.Hooks == nil {
		spec.Hooks = &specs.Hooks{}
	}
	spec.Hooks.Prestart = append(slices.Clone(spec.Hooks.Prestart), guest.Prestart...) //nolint:staticcheck // see findGuestHooks
	spec.Hooks.Poststart = append(slices.Clone(spec.Hooks.Poststart), guest.Poststart...)
	spec.Hooks.Poststop = append(slices.Clone(spec.Hooks.Poststop), guest.Poststop...)
}
