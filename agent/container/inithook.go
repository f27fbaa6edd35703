package container

import (
	"os"

	// The nsenter constructor runs before the Go runtime in libcontainer's
	// re-exec'd `init` and does the namespace joins.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	// Registers the device-rule managers the cgroup drivers need.
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"
)

// InitHook must be the first thing main (and TestMain) calls: when the
// binary was re-executed by libcontainer as `<self> init`, it becomes the
// container's init and never returns.
func InitHook() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}
