package kmod

import (
	"bufio"
	"fmt"
	"strings"
)

// The load list is the contract between the image builder, which writes
// it, and the guest, which loads what it names (agent/kmodload).

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
		f := strings.Fields(line)
		if !strings.HasPrefix(f[0], "/") {
			return nil, fmt.Errorf("line %d: module path %q is not absolute", n, f[0])
		}
		out = append(out, Entry{Path: f[0], Params: strings.Join(f[1:], " ")})
	}
	return out, sc.Err()
}
