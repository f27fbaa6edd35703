package copyfile

import (
	"path/filepath"
	"strings"
	"testing"
)

func FuzzRelPath(f *testing.F) {
	base := "/run/kata-containers/shared/containers"
	for _, s := range []string{base + "/sb/rootfs/etc/hosts", base + "/../x", base + "/a/../../b", "/etc/passwd", base + "x/y", base + "/a//b"} {
		f.Add(s, "../target")
	}
	f.Fuzz(func(t *testing.T, p, target string) {
		rel, err := RelPath(base, p)
		if err != nil {
			return
		}
		if !filepath.IsLocal(rel) || filepath.Join(base, rel) != p || !strings.HasPrefix(p, base+"/") {
			t.Fatalf("RelPath(%q) = %q escapes %s", p, rel, base)
		}
		if err := CheckSymlinkTarget(base, rel, target); err != nil {
			return
		}
		resolved := target
		if !filepath.IsAbs(target) {
			resolved = filepath.Join(filepath.Dir(p), target)
		}
		resolved = filepath.Clean(resolved)
		if resolved != base && !strings.HasPrefix(resolved, base+"/") {
			t.Fatalf("symlink %q at %q accepted but resolves to %q", target, p, resolved)
		}
	})
}
