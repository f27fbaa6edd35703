package kmod

import (
	"strings"
	"testing"
)

func TestParseList(t *testing.T) {
	got, err := ParseList("# generated\n/lib/modules/v/a.ko\n\n  /lib/modules/v/b.ko  x=1 y=2 \n")
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{{Path: "/lib/modules/v/a.ko"}, {Path: "/lib/modules/v/b.ko", Params: "x=1 y=2"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("ParseList = %+v, want %+v", got, want)
	}
	if _, err := ParseList("relative.ko\n"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("relative path: %v", err)
	}
}

func FuzzParseList(f *testing.F) {
	f.Add("/lib/modules/v/a.ko\n# c\n/lib/modules/v/b.ko x=1\n")
	f.Add("relative.ko")
	f.Fuzz(func(t *testing.T, data string) {
		entries, err := ParseList(data)
		if err != nil {
			return
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Path, "/") || strings.ContainsAny(e.Path, " \t\n") {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}
