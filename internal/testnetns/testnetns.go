// Package testnetns gives tests scratch network namespaces, so that tests
// of interfaces, routes and iptables rules never read or change the
// machine's. A namespace is made on a goroutine locked to its thread that
// never unlocks it: the thread ends with the goroutine instead of going
// back to the scheduler inside the scratch namespace.
package testnetns

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/wren-vm/wren/internal/testroot"
)

// Run runs f on a thread moved into a fresh network namespace (holding
// only a loopback device, down): the tools f starts inherit it. f runs on
// another goroutine, so it reports failures with t.Error, not t.Fatal.
// Without root the test is skipped.
func Run(t testing.TB, f func()) {
	t.Helper()
	testroot.Require(t, "network namespaces")
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := netns.New()
		if err != nil {
			t.Error(err)
			return
		}
		defer ns.Close()
		f()
	}()
	<-done
}

// Handle returns a netlink handle bound to a fresh network namespace
// (holding only a loopback device, down), closed with the namespace when
// the test ends; no thread of the test stays in it. Without root the test
// is skipped.
func Handle(t testing.TB) *netlink.Handle {
	t.Helper()
	testroot.Require(t, "network namespaces")
	type result struct {
		ns  netns.NsHandle
		err error
	}
	made := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := netns.New()
		made <- result{ns, err}
	}()
	r := <-made
	if r.err != nil {
		t.Fatal(r.err)
	}
	h, err := netlink.NewHandleAt(r.ns)
	if err != nil {
		r.ns.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); r.ns.Close() })
	return h
}
