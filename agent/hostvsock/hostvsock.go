// Package hostvsock listens on the guest's vsock ports for the host alone.
//
// AF_VSOCK is not network-namespaced: every process of the guest, a
// container included, can open a vsock connection to any port the agent
// serves. With a local transport (vsock_loopback) or by naming the guest's
// own CID, such a connection reaches the agent's API, its log stream or
// its debug console from inside the guest, and the agent API can start a
// privileged container. The guest image has no local transport, so those
// connections cannot be made at all; this package is the second wall:
// whatever the kernel lets through, the agent serves only connections
// whose peer is the host (VMADDR_CID_HOST), the one peer a shim can be.
package hostvsock

import (
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/mdlayher/vsock"
)

// HostCID is VMADDR_CID_HOST, the context ID the guest sees the host as
// (with vhost-vsock and with the hybrid vsock of Firecracker, Cloud
// Hypervisor and wren-vsockd alike).
const HostCID = 2

// AnyCID is VMADDR_CID_ANY: listen on every context ID the guest has.
const AnyCID = 0xffffffff

// Listen listens on vsock port at cid (AnyCID for all) and serves the host
// alone (see Only).
func Listen(cid, port uint32, log *slog.Logger) (net.Listener, error) {
	ln, err := vsock.ListenContextID(cid, port, nil)
	if err != nil {
		return nil, err
	}
	return Only(ln, log), nil
}

// Only wraps ln so that Accept returns only connections from the host:
// any other peer is closed at once and logged (the first, then every
// logEvery-th, so a peer that retries cannot flood the log).
func Only(ln net.Listener, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &hostListener{Listener: ln, log: log}
}

const logEvery = 64

type hostListener struct {
	net.Listener
	log     *slog.Logger
	refused uint64 // only Accept's goroutine touches it
}

// Accept returns the next connection from the host.
func (l *hostListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if FromHost(c.RemoteAddr()) {
			return c, nil
		}
		c.Close()
		l.refused++
		if l.refused%logEvery == 1 {
			l.log.Warn("refused a vsock connection that is not from the host",
				"peer", fmt.Sprint(c.RemoteAddr()), "listener", fmt.Sprint(l.Addr()), "refused_so_far", l.refused)
		}
	}
}

// FromHost reports whether addr is a vsock address of the host. Anything
// else, a non-vsock address included, is not.
func FromHost(addr net.Addr) bool {
	a, ok := addr.(*vsock.Addr)
	return ok && a.ContextID == HostCID
}
