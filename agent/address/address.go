// Package address parses the endpoint forms the agent listens on and the
// harness dials: vsock://CID:PORT, hvsock://UDS_PATH:PORT, unix:///path and
// unix://@abstract.
package address

import (
	"fmt"
	"strconv"
	"strings"
)

// Scheme is an endpoint's transport.
type Scheme string

// The endpoint transports.
const (
	// Vsock is AF_VSOCK; a listener may use CID -1 (VMADDR_CID_ANY).
	Vsock Scheme = "vsock"
	// HybridVsock is Firecracker/Cloud Hypervisor hybrid vsock: a unix
	// socket on the host that forwards to a guest port after a
	// "CONNECT <port>" handshake. Dial only.
	HybridVsock Scheme = "hvsock"
	// Unix is a unix stream socket, on a path or in the abstract namespace.
	Unix Scheme = "unix"
)

// AnyCID is VMADDR_CID_ANY as written in an address.
const AnyCID = -1

// Address is a parsed endpoint.
type Address struct {
	Scheme Scheme
	// CID is the vsock context id (AnyCID allowed for listening).
	CID int64
	// Port is the vsock port (vsock and hvsock).
	Port uint32
	// Path is the unix socket path (unix, hvsock), without the @ of an
	// abstract name.
	Path string
	// Abstract is set for unix://@name.
	Abstract bool
}

// Parse parses an endpoint; the error says what is wrong with it.
func Parse(s string) (Address, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Address{}, fmt.Errorf("address %q: missing scheme (want vsock://, hvsock:// or unix://)", s)
	}
	switch Scheme(scheme) {
	case Vsock:
		cidText, portText, ok := strings.Cut(rest, ":")
		if !ok {
			return Address{}, fmt.Errorf("address %q: want vsock://CID:PORT", s)
		}
		cid, err := strconv.ParseInt(cidText, 10, 64)
		if err != nil || cid < AnyCID || cid > 0xffffffff {
			return Address{}, fmt.Errorf("address %q: bad context id %q", s, cidText)
		}
		port, err := parsePort(portText)
		if err != nil {
			return Address{}, fmt.Errorf("address %q: %w", s, err)
		}
		return Address{Scheme: Vsock, CID: cid, Port: port}, nil
	case HybridVsock:
		i := strings.LastIndexByte(rest, ':')
		if i <= 0 {
			return Address{}, fmt.Errorf("address %q: want hvsock://UDS_PATH:PORT", s)
		}
		port, err := parsePort(rest[i+1:])
		if err != nil {
			return Address{}, fmt.Errorf("address %q: %w", s, err)
		}
		return Address{Scheme: HybridVsock, Path: rest[:i], Port: port}, nil
	case Unix:
		if name, ok := strings.CutPrefix(rest, "@"); ok {
			if name == "" {
				return Address{}, fmt.Errorf("address %q: empty abstract socket name", s)
			}
			return Address{Scheme: Unix, Path: name, Abstract: true}, nil
		}
		if !strings.HasPrefix(rest, "/") {
			return Address{}, fmt.Errorf("address %q: unix socket path must be absolute (unix:///path) or abstract (unix://@name)", s)
		}
		return Address{Scheme: Unix, Path: rest}, nil
	}
	return Address{}, fmt.Errorf("address %q: unknown scheme %q (want vsock, hvsock or unix)", s, scheme)
}

func parsePort(s string) (uint32, error) {
	p, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint32(p), nil
}

// UnixName is the name to give net.Dial/net.Listen for a unix address:
// abstract names carry the leading "@" that Go maps to a NUL byte.
func (a Address) UnixName() string {
	if a.Abstract {
		return "@" + a.Path
	}
	return a.Path
}

// String formats the address back into its URI form.
func (a Address) String() string {
	switch a.Scheme {
	case Vsock:
		return fmt.Sprintf("vsock://%d:%d", a.CID, a.Port)
	case HybridVsock:
		return fmt.Sprintf("hvsock://%s:%d", a.Path, a.Port)
	case Unix:
		if a.Abstract {
			return "unix://@" + a.Path
		}
		return "unix://" + a.Path
	}
	return string(a.Scheme) + "://?"
}
