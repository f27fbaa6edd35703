package storage

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// MountOptions is a Storage's option list split the way mount(2) wants it.
type MountOptions struct {
	Flags       uintptr // MS_* flags for the mount itself
	Propagation uintptr // MS_SHARED/MS_PRIVATE/... applied by a second mount call
	Data        []string
}

// DataString joins the filesystem-specific options for mount(2).
func (o MountOptions) DataString() string { return strings.Join(o.Data, ",") }

// flagOptions: a set option ORs its bits in, a clear option removes them.
var flagOptions = map[string]struct {
	clear bool
	flag  uintptr
}{
	"defaults":      {false, 0},
	"ro":            {false, unix.MS_RDONLY},
	"rw":            {true, unix.MS_RDONLY},
	"nosuid":        {false, unix.MS_NOSUID},
	"suid":          {true, unix.MS_NOSUID},
	"nodev":         {false, unix.MS_NODEV},
	"dev":           {true, unix.MS_NODEV},
	"noexec":        {false, unix.MS_NOEXEC},
	"exec":          {true, unix.MS_NOEXEC},
	"sync":          {false, unix.MS_SYNCHRONOUS},
	"async":         {true, unix.MS_SYNCHRONOUS},
	"dirsync":       {false, unix.MS_DIRSYNC},
	"mand":          {false, unix.MS_MANDLOCK},
	"nomand":        {true, unix.MS_MANDLOCK},
	"noatime":       {false, unix.MS_NOATIME},
	"atime":         {true, unix.MS_NOATIME},
	"nodiratime":    {false, unix.MS_NODIRATIME},
	"diratime":      {true, unix.MS_NODIRATIME},
	"bind":          {false, unix.MS_BIND},
	"rbind":         {false, unix.MS_BIND | unix.MS_REC},
	"relatime":      {false, unix.MS_RELATIME},
	"norelatime":    {true, unix.MS_RELATIME},
	"strictatime":   {false, unix.MS_STRICTATIME},
	"nostrictatime": {true, unix.MS_STRICTATIME},
	"lazytime":      {false, unix.MS_LAZYTIME},
	"nolazytime":    {true, unix.MS_LAZYTIME},
	"silent":        {false, unix.MS_SILENT},
	"loud":          {true, unix.MS_SILENT},
}

var propagationOptions = map[string]uintptr{
	"private":     unix.MS_PRIVATE,
	"rprivate":    unix.MS_PRIVATE | unix.MS_REC,
	"shared":      unix.MS_SHARED,
	"rshared":     unix.MS_SHARED | unix.MS_REC,
	"slave":       unix.MS_SLAVE,
	"rslave":      unix.MS_SLAVE | unix.MS_REC,
	"unbindable":  unix.MS_UNBINDABLE,
	"runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// refusedOptions act on a mount that already exists instead of making a
// new one: a Storage carrying them could change a filesystem the agent
// never mounted (remount /run read-write, move a mount away). The one
// legitimate remount, UpdateEphemeralMounts, adds MS_REMOUNT itself and
// only for mounts the storage manager holds.
var refusedOptions = map[string]string{
	"remount": "changes an existing mount",
	"move":    "moves an existing mount",
}

// kataOptionPrefix marks options addressed to the agent, never to mount(2).
const kataOptionPrefix = "io.katacontainers."

// maxMountData is what the kernel copies of mount(2)'s data: one page,
// NUL included.
const maxMountData = 4095

// ParseOptions splits Storage.options into mount flags, propagation and
// filesystem data. Agent-only options (io.katacontainers.*) are dropped;
// a NUL byte, data longer than the kernel accepts, or an option that acts
// on an existing mount (remount, move) is an error.
func ParseOptions(opts []string) (MountOptions, error) {
	var mo MountOptions
	dataLen := 0
	for _, o := range opts {
		if o == "" {
			continue
		}
		if strings.IndexByte(o, 0) >= 0 {
			return MountOptions{}, fmt.Errorf("mount option %q contains a NUL byte", o)
		}
		if why, ok := refusedOptions[o]; ok {
			return MountOptions{}, fmt.Errorf("mount option %q is not allowed: it %s", o, why)
		}
		if f, ok := flagOptions[o]; ok {
			if f.clear {
				mo.Flags &^= f.flag
			} else {
				mo.Flags |= f.flag
			}
			continue
		}
		if p, ok := propagationOptions[o]; ok {
			mo.Propagation = p
			continue
		}
		if strings.HasPrefix(o, kataOptionPrefix) {
			continue
		}
		if dataLen > 0 {
			dataLen++
		}
		dataLen += len(o)
		if dataLen > maxMountData {
			return MountOptions{}, fmt.Errorf("mount data exceeds %d bytes", maxMountData)
		}
		mo.Data = append(mo.Data, o)
	}
	return mo, nil
}

// optionValue returns the value of the first "key=value" option.
func optionValue(opts []string, key string) (string, bool) {
	for _, o := range opts {
		if v, ok := strings.CutPrefix(o, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// withoutOption returns opts without any "key=..." entries.
func withoutOption(opts []string, key string) []string {
	out := make([]string, 0, len(opts))
	for _, o := range opts {
		if !strings.HasPrefix(o, key+"=") {
			out = append(out, o)
		}
	}
	return out
}
