package device

import (
	"fmt"
	"strings"
	"testing"
)

func FuzzParsePCIPath(f *testing.F) {
	for _, s := range []string{"02/00", "1f/03.7", "20/00/02", "02", "zz", "02//00", "1f.8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		root, path, err := ParsePCIPath(s)
		if err != nil {
			return
		}
		if len(path) == 0 || len(path) > 16 {
			t.Fatalf("%q gave %d hops", s, len(path))
		}
		var parts []string
		if root != 0 {
			parts = append(parts, fmt.Sprintf("%02x", root))
		}
		for _, h := range path {
			if h.Slot >= 0x20 || h.Func >= 8 {
				t.Fatalf("%q gave hop %+v", s, h)
			}
			parts = append(parts, h.String())
		}
		// What was accepted must parse back to the same path.
		root2, path2, err := ParsePCIPath(strings.Join(parts, "/"))
		if err != nil || root2 != root || fmt.Sprint(path2) != fmt.Sprint(path) {
			t.Fatalf("%q → %v/%v does not round-trip: %v/%v %v", s, root, path, root2, path2, err)
		}
	})
}
