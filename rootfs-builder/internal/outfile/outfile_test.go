package outfile

import (
	"os"
	"path/filepath"
	"testing"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func inode(t *testing.T, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func TestCommit(t *testing.T) {
	big := string(make([]byte, 3<<20)) // spans several compare chunks
	for _, tc := range []struct {
		name, old, new   string
		hasOld, replaced bool
	}{
		{name: "no product yet", new: "a", replaced: true},
		{name: "same bytes", hasOld: true, old: "abc", new: "abc", replaced: false},
		{name: "same large bytes", hasOld: true, old: big, new: big, replaced: false},
		{name: "same size, other bytes", hasOld: true, old: "abc", new: "abd", replaced: true},
		{name: "differs in the last chunk", hasOld: true, old: big + "x", new: big + "y", replaced: true},
		{name: "longer", hasOld: true, old: "abc", new: "abcd", replaced: true},
		{name: "empty both", hasOld: true, old: "", new: "", replaced: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path, tmp := filepath.Join(dir, "product"), filepath.Join(dir, ".product-tmp")
			var before os.FileInfo
			if tc.hasOld {
				write(t, path, tc.old)
				before = inode(t, path)
			}
			write(t, tmp, tc.new)
			replaced, err := Commit(tmp, path)
			if err != nil {
				t.Fatal(err)
			}
			if replaced != tc.replaced {
				t.Errorf("replaced = %v, want %v", replaced, tc.replaced)
			}
			if _, err := os.Stat(tmp); !os.IsNotExist(err) {
				t.Errorf("temporary file left behind (stat: %v)", err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.new {
				t.Errorf("product has %d bytes of other content, want the new %d", len(got), len(tc.new))
			}
			if before != nil && !tc.replaced && !os.SameFile(before, inode(t, path)) {
				t.Error("an unchanged product was replaced by another inode")
			}
		})
	}
}

func TestCommitProductIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	path, tmp := filepath.Join(dir, "product"), filepath.Join(dir, ".product-tmp")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, tmp, "a")
	if _, err := Commit(tmp, path); err == nil {
		t.Fatal("Commit over a directory succeeded")
	}
}
