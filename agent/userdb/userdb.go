// Package userdb resolves the user a container process runs as from the
// container's own /etc/passwd and /etc/group, as Kata's agent does for
// CreateContainer's and ExecProcess's string_user and for a process spec
// that names its user: the host sends names, only the image knows their
// ids. The files are read inside the root filesystem, symlinks resolved
// as if it were /, so an image cannot point the agent at the guest's own
// files.
package userdb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
)

// Spec is a user as a request names it: each part a name or a number.
type Spec struct {
	User       string
	Group      string   // "" keeps the user's primary group
	Additional []string // more groups, beside those listing the user
}

// IDs are the resolved numeric ids.
type IDs struct {
	UID, GID       uint32
	AdditionalGIDs []uint32
}

// entry is one line of /etc/passwd or /etc/group.
type entry struct {
	name    string
	id      uint32
	gid     uint32   // passwd: the primary group
	members []string // group: the users listed
}

// Resolve resolves s against the files below rootfs. A name that the
// files do not hold is an invalid argument; a number need not be listed
// (runc's rule): an unlisted uid gets group 0.
func Resolve(rootfs string, s Spec) (IDs, error) {
	if s.User == "" {
		return IDs{}, errdefs.New(errdefs.ErrInvalidArgument, "no user given")
	}
	passwd, err := readDB(rootfs, "etc/passwd", parsePasswd)
	if err != nil {
		return IDs{}, err
	}
	var ids IDs
	var name string
	if e, ok := lookup(passwd, s.User); ok {
		ids.UID, ids.GID, name = e.id, e.gid, e.name
	} else if n, err := parseID(s.User); err == nil {
		ids.UID = n
	} else {
		return IDs{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "user %q is not in the container's /etc/passwd", s.User)
	}
	if s.Group == "" && len(s.Additional) == 0 && name == "" {
		return ids, nil
	}
	groups, err := readDB(rootfs, "etc/group", parseGroup)
	if err != nil {
		return IDs{}, err
	}
	if s.Group != "" {
		if ids.GID, err = groupID(groups, s.Group); err != nil {
			return IDs{}, err
		}
	}
	seen := map[uint32]bool{ids.GID: true}
	add := func(g uint32) {
		if !seen[g] {
			seen[g] = true
			ids.AdditionalGIDs = append(ids.AdditionalGIDs, g)
		}
	}
	if name != "" {
		for _, g := range groups {
			for _, m := range g.members {
				if m == name {
					add(g.id)
				}
			}
		}
	}
	for _, a := range s.Additional {
		g, err := groupID(groups, a)
		if err != nil {
			return IDs{}, err
		}
		add(g)
	}
	return ids, nil
}

// groupID resolves a group name or number.
func groupID(groups []entry, g string) (uint32, error) {
	if e, ok := lookup(groups, g); ok {
		return e.id, nil
	}
	if n, err := parseID(g); err == nil {
		return n, nil
	}
	return 0, errdefs.Errorf(errdefs.ErrInvalidArgument, "group %q is not in the container's /etc/group", g)
}

// lookup finds an entry by name, or by number when key is one.
func lookup(db []entry, key string) (entry, bool) {
	for _, e := range db {
		if e.name == key {
			return e, true
		}
	}
	if n, err := parseID(key); err == nil {
		for _, e := range db {
			if e.id == n {
				return e, true
			}
		}
	}
	return entry{}, false
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// maxDB bounds what is read of one file: an image is not trusted to keep
// it small.
const maxDB = 4 << 20

// readDB reads one of the files inside rootfs; a missing file is empty.
func readDB(rootfs, rel string, parse func(fields []string) (entry, bool)) ([]entry, error) {
	root, err := os.Open(rootfs)
	if err != nil {
		return nil, fmt.Errorf("container root %s: %w", rootfs, err)
	}
	defer root.Close()
	fd, err := unix.Openat2(int(root.Fd()), rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s in the container: %w", filepath.Join("/", rel), err)
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var out []entry
	sc := bufio.NewScanner(io.LimitReader(f, maxDB))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if e, ok := parse(strings.Split(line, ":")); ok {
			out = append(out, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s in the container: %w", filepath.Join("/", rel), err)
	}
	return out, nil
}

// parsePasswd reads "name:password:uid:gid:gecos:home:shell".
func parsePasswd(f []string) (entry, bool) {
	if len(f) < 4 {
		return entry{}, false
	}
	uid, err1 := parseID(f[2])
	gid, err2 := parseID(f[3])
	if f[0] == "" || err1 != nil || err2 != nil {
		return entry{}, false
	}
	return entry{name: f[0], id: uid, gid: gid}, true
}

// parseGroup reads "name:password:gid:member,member".
func parseGroup(f []string) (entry, bool) {
	if len(f) < 3 {
		return entry{}, false
	}
	gid, err := parseID(f[2])
	if f[0] == "" || err != nil {
		return entry{}, false
	}
	e := entry{name: f[0], id: gid}
	if len(f) > 3 && f[3] != "" {
		e.members = strings.Split(f[3], ",")
	}
	return e, true
}
