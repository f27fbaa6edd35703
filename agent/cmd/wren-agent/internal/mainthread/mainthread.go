// Package mainthread keeps the process's main thread for the main
// goroutine. Importing it is the whole API.
//
// Why: a goroutine that locks its OS thread, changes the thread's
// namespaces and returns without unlocking gets its thread killed by the Go
// runtime, so nothing else ever runs in those namespaces. libcontainer
// relies on that (it joins each container's mount namespace this way while
// starting it) and so does the sandbox's namespace set-up. The exception is
// the main thread, which cannot exit: the runtime parks it for good, still
// in the container's namespaces. It is the thread that /proc/self names, so
// from then on /proc/self/mountinfo and everything else read through
// /proc/self describe a container, not the agent. Locking the main
// goroutine to the main thread from a package initializer, before any
// other goroutine exists, means no other goroutine can ever run there.
package mainthread

import "runtime"

func init() {
	runtime.LockOSThread()
}
