package container

import (
	"bufio"
	"os"
	"strings"
)

// RootIsInitramfs reports whether / is the initial ramfs ("rootfs"), where
// pivot_root(2) fails and containers need no_pivot_root (MS_MOVE + chroot).
func RootIsInitramfs() bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Fields: id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) < 5 || fields[4] != "/" {
			continue
		}
		_, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		if pf := strings.Fields(post); len(pf) > 0 && pf[0] == "rootfs" {
			return true
		}
	}
	return false
}
