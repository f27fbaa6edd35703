package kconfig

import (
	"os"
	"path/filepath"
	"testing"
)

// builtConfigs are the .config files make kernel leaves in out/, per
// architecture.
var builtConfigs = map[string]string{"x86_64": "config-wren", "arm64": "config-wren-arm64"}

// TestBuiltConfigs runs the checker on the .config of each kernel make
// kernel built (make test builds them first, or takes them from the cache):
// every option the fragments request survived kconfig, and the kernels have
// no module support at all, so that nothing can be missing from an image
// that carries no modules. $WREN_OUT is out/ (make test sets it).
func TestBuiltConfigs(t *testing.T) {
	out := os.Getenv("WREN_OUT")
	if out == "" {
		out = filepath.Join(fragDir, "..", "out")
	}
	for _, arch := range Arches {
		path := filepath.Join(out, builtConfigs[arch])
		have, err := ReadConfig(path)
		if err != nil {
			t.Fatalf("%s: %v (make kernel builds it)", arch, err)
		}
		want, err := LoadFragments(fragDir, arch)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range Check(want, have) {
			t.Errorf("%s: %s", path, f)
		}
		if v := have.Get("MODULES"); v != "n" {
			t.Errorf("%s: CONFIG_MODULES=%s, want no module support", path, v)
		}
		if v := have.Get("VSOCKETS_LOOPBACK"); v != "n" {
			t.Errorf("%s: CONFIG_VSOCKETS_LOOPBACK=%s: containers could reach the agent through it", path, v)
		}
	}
}
