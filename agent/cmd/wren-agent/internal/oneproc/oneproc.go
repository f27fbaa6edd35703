// Package oneproc sets the agent's GOMAXPROCS default (one P) from a
// package initializer, before the heavy package initializers of the agent
// run. Importing it is the whole API.
//
// Why in an init rather than in main: Go initializes packages in import
// path order as soon as their own imports are ready, and this package
// imports only runtime and syscall, so it runs ahead of the protobuf,
// libcontainer and netlink initializers. While those run with two Ps, the
// second P's mcache takes its own partly filled spans of every size class
// and extra OS threads start; both stay for the life of the process.
// Setting it in main came after all of that.
package oneproc

import (
	"runtime"
	"syscall"
)

// Env is the variable that overrides the default: an operator (or a
// benchmark's "stock Go" variant) setting GOMAXPROCS keeps Go's behaviour.
const Env = "GOMAXPROCS"

// Applied reports whether the one-P default was set by this package (false
// when GOMAXPROCS came from the environment).
var Applied bool

func init() {
	if _, set := syscall.Getenv(Env); set {
		return
	}
	// Setting GOMAXPROCS stops the world, which costs a pod VM's boot a
	// few ms under TCG; on one CPU it is 1 already.
	if runtime.GOMAXPROCS(0) != 1 {
		runtime.GOMAXPROCS(1)
	}
	Applied = true
}
