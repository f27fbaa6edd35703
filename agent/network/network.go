// Package network configures the guest's interfaces, routes and neighbours
// over rtnetlink for the UpdateInterface, UpdateRoutes, ListInterfaces,
// ListRoutes and AddARPNeighbors requests.
package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
)

// ErrInvalid marks a request the guest must not apply (an
// errdefs.ErrInvalidArgument).
var ErrInvalid = errdefs.ErrInvalidArgument

// Family of an address or route.
type Family int

const (
	V4 Family = iota
	V6
)

// Addr is an interface address with its prefix length in Mask ("24").
type Addr struct {
	Family  Family
	Address string
	Mask    string
}

// Interface is the wire shape of types.Interface.
type Interface struct {
	Device     string
	Name       string
	Addrs      []Addr
	MTU        uint64
	HwAddr     string
	DevicePath string // PCI path of the NIC, when the MAC is not enough
	Type       string
	RawFlags   uint32
}

// Route is the wire shape of types.Route.
type Route struct {
	Dest    string // CIDR, or "" / "default" for the default route
	Gateway string
	Device  string
	Source  string
	Scope   uint32
	Family  Family
	Flags   uint32
	MTU     uint32
}

// Neighbor is the wire shape of types.ARPNeighbor.
type Neighbor struct {
	IP     Addr
	Device string
	LLAddr string
	State  int32
	Flags  int32
}

// LinkFinder resolves a NIC's PCI path to its interface name (waiting for
// its hotplug); the device package provides it.
type LinkFinder interface {
	NetByPCIPath(ctx context.Context, pciPath string) (string, error)
}

// Network applies configuration through one rtnetlink handle. Tests pass a
// handle bound to a network namespace they created.
type Network struct {
	h      *netlink.Handle
	finder LinkFinder
	// mu serialises reconfiguration: two UpdateRoutes interleaving their
	// flush and add would leave a mix of both tables.
	mu sync.Mutex
}

// New returns a Network using h (nil: the agent's own namespace) and finder
// (nil: interfaces are found by MAC only).
func New(h *netlink.Handle, finder LinkFinder) (*Network, error) {
	if h == nil {
		var err error
		// Route family only: with no families NewHandle also opens
		// NETLINK_XFRM and NETLINK_NETFILTER sockets, which fail with
		// EPROTONOSUPPORT on a guest kernel where xfrm_user/nfnetlink are
		// modules that are not loaded (Debian's), stopping the agent.
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return nil, fmt.Errorf("rtnetlink handle: %w", err)
		}
	}
	return &Network{h: h, finder: finder}, nil
}

// dumpRetries bounds retries of a dump the kernel reported as interrupted by
// a concurrent change.
const dumpRetries = 5

func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		v, err = f()
		if !errors.Is(err, nl.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func invalid(format string, args ...any) error {
	return errdefs.Errorf(errdefs.ErrInvalidArgument, format, args...)
}

func parseIPNet(a Addr) (*net.IPNet, error) {
	ip := net.ParseIP(a.Address)
	if ip == nil {
		return nil, invalid("address %q is not an IP", a.Address)
	}
	bits := 32
	if ip.To4() == nil {
		bits = 128
	}
	if (a.Family == V6) != (bits == 128) {
		return nil, invalid("address %s does not match its family", a.Address)
	}
	ones := bits
	if a.Mask != "" {
		n, err := strconv.Atoi(a.Mask)
		if err != nil || n < 0 || n > bits {
			return nil, invalid("prefix length %q for %s", a.Mask, a.Address)
		}
		ones = n
	}
	if bits == 32 {
		ip = ip.To4()
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(ones, bits)}, nil
}

// findLink locates the interface an UpdateInterface names: by PCI path
// when given, else by MAC address.
func (n *Network) findLink(ctx context.Context, iface *Interface) (netlink.Link, error) {
	if iface.DevicePath != "" {
		if n.finder == nil {
			return nil, errdefs.Errorf(errdefs.ErrFailedPrecondition, "interface with PCI path %s: no uevent listener", iface.DevicePath)
		}
		name, err := n.finder.NetByPCIPath(ctx, iface.DevicePath)
		if err != nil {
			return nil, err
		}
		l, err := n.h.LinkByName(name)
		if err != nil {
			return nil, errdefs.Errorf(errdefs.ErrNotFound, "interface %s at PCI path %s: %v", name, iface.DevicePath, err)
		}
		return l, nil
	}
	mac, err := net.ParseMAC(iface.HwAddr)
	if err != nil {
		return nil, invalid("interface MAC %q: %v", iface.HwAddr, err)
	}
	links, err := retryDump(n.h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if slices.Equal(l.Attrs().HardwareAddr, mac) {
			return l, nil
		}
	}
	return nil, errdefs.Errorf(errdefs.ErrNotFound, "no interface with MAC %s", mac)
}

// UpdateInterface renames the interface, replaces its addresses and sets
// its MTU and flags, then brings it up, returning the result.
func (n *Network) UpdateInterface(ctx context.Context, iface Interface) (Interface, error) {
	name, nets, err := checkInterface(iface)
	if err != nil {
		return Interface{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	link, err := n.findLink(ctx, &iface)
	if err != nil {
		return Interface{}, err
	}
	if link, err = n.setDownAndRename(link, name); err != nil {
		return Interface{}, err
	}
	if err := n.setMTUAndFlags(link, iface.MTU, iface.RawFlags); err != nil {
		return Interface{}, err
	}
	if err := n.replaceAddrs(link, nets); err != nil {
		return Interface{}, err
	}
	if link, err = n.setUp(link); err != nil {
		return Interface{}, err
	}
	return n.describe(link)
}

// checkInterface validates an UpdateInterface request before anything is
// changed, and returns the name the interface is to have and its
// addresses.
func checkInterface(iface Interface) (string, []*net.IPNet, error) {
	if iface.Name == "" && iface.Device == "" {
		return "", nil, invalid("interface without a name")
	}
	var nets []*net.IPNet
	for _, a := range iface.Addrs {
		ipn, err := parseIPNet(a)
		if err != nil {
			return "", nil, err
		}
		nets = append(nets, ipn)
	}
	name := iface.Name
	if name == "" {
		name = iface.Device
	}
	if len(name) >= unix.IFNAMSIZ || strings.ContainsAny(name, "/ \x00") || name == "." || name == ".." {
		return "", nil, invalid("interface name %q", name)
	}
	if iface.MTU > 1<<20 {
		return "", nil, invalid("MTU %d", iface.MTU)
	}
	return name, nets, nil
}

// setDownAndRename takes the link down, which renaming needs, gives it
// name and returns the link as the kernel now describes it.
func (n *Network) setDownAndRename(link netlink.Link, name string) (netlink.Link, error) {
	if err := n.h.LinkSetDown(link); err != nil {
		return nil, fmt.Errorf("set %s down: %w", link.Attrs().Name, err)
	}
	if link.Attrs().Name != name {
		if err := n.h.LinkSetName(link, name); err != nil {
			return nil, fmt.Errorf("rename %s to %s: %w", link.Attrs().Name, name, err)
		}
	}
	link, err := n.h.LinkByIndex(link.Attrs().Index)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	return link, nil
}

// setMTUAndFlags sets the MTU when one is asked for and differs, and turns
// NOARP and PROMISC on when flags has them; it clears neither.
func (n *Network) setMTUAndFlags(link netlink.Link, mtu uint64, flags uint32) error {
	name := link.Attrs().Name
	if mtu > 0 && int(mtu) != link.Attrs().MTU {
		if err := n.h.LinkSetMTU(link, int(mtu)); err != nil {
			return fmt.Errorf("set MTU of %s to %d: %w", name, mtu, err)
		}
	}
	if flags&unix.IFF_NOARP != 0 {
		if err := n.h.LinkSetARPOff(link); err != nil {
			return fmt.Errorf("set %s noarp: %w", name, err)
		}
	}
	if flags&unix.IFF_PROMISC != 0 {
		if err := n.h.SetPromiscOn(link); err != nil {
			return fmt.Errorf("set %s promisc: %w", name, err)
		}
	}
	return nil
}

// replaceAddrs removes the link's addresses, but for the kernel's own IPv6
// link-local one, and adds nets.
func (n *Network) replaceAddrs(link netlink.Link, nets []*net.IPNet) error {
	name := link.Attrs().Name
	old, err := retryDump(func() ([]netlink.Addr, error) { return n.h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range old {
		if a.IP.IsLinkLocalUnicast() && a.IP.To4() == nil {
			continue // the kernel's own fe80:: address
		}
		if err := n.h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s from %s: %w", a.IPNet, name, err)
		}
	}
	for _, ipn := range nets {
		if err := n.h.AddrReplace(link, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("add %s to %s: %w", ipn, name, err)
		}
	}
	return nil
}

// setUp brings the link up and returns it as the kernel now describes it.
func (n *Network) setUp(link netlink.Link) (netlink.Link, error) {
	name := link.Attrs().Name
	if err := n.h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", name, err)
	}
	link, err := n.h.LinkByIndex(link.Attrs().Index)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	return link, nil
}

func (n *Network) describe(l netlink.Link) (Interface, error) {
	a := l.Attrs()
	out := Interface{Device: a.Name, Name: a.Name, MTU: uint64(a.MTU), HwAddr: a.HardwareAddr.String(), Type: l.Type(), RawFlags: a.RawFlags}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return n.h.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return Interface{}, fmt.Errorf("list addresses of %s: %w", a.Name, err)
	}
	for _, ad := range addrs {
		ones, _ := ad.Mask.Size()
		fam := V4
		if ad.IP.To4() == nil {
			fam = V6
		}
		out.Addrs = append(out.Addrs, Addr{Family: fam, Address: ad.IP.String(), Mask: strconv.Itoa(ones)})
	}
	return out, nil
}

// ListInterfaces describes every interface, loopback included, as Kata's
// agent lists them.
func (n *Network) ListInterfaces(ctx context.Context) ([]Interface, error) {
	links, err := retryDump(n.h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []Interface
	for _, l := range links {
		ifc, err := n.describe(l)
		if err != nil {
			return nil, err
		}
		out = append(out, ifc)
	}
	return out, nil
}

// ListRoutes returns the main table's unicast routes, the kernel's own
// (IPv6 link-local, ::1 on lo) included, as Kata's agent lists them.
func (n *Network) ListRoutes(ctx context.Context) ([]Route, error) {
	routes, err := n.mainRoutes()
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	var out []Route
	for _, r := range routes {
		name, ok := names[r.LinkIndex]
		if !ok && r.LinkIndex > 0 {
			if l, err := n.h.LinkByIndex(r.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			names[r.LinkIndex] = name
		}
		out = append(out, toRoute(r, name))
	}
	return out, nil
}

func (n *Network) mainRoutes() ([]netlink.Route, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return n.h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return routes, nil
}

func isKernelLinkLocal(r netlink.Route) bool {
	return r.Dst != nil && r.Dst.IP.To4() == nil && r.Dst.IP.IsLinkLocalUnicast() && r.Protocol == unix.RTPROT_KERNEL
}

func toRoute(r netlink.Route, dev string) Route {
	out := Route{Device: dev, Scope: uint32(r.Scope), Flags: uint32(r.Flags), MTU: uint32(r.MTU), Family: V4}
	if r.Family == netlink.FAMILY_V6 {
		out.Family = V6
	}
	if r.Dst != nil {
		ones, _ := r.Dst.Mask.Size()
		if ones != 0 || !r.Dst.IP.IsUnspecified() {
			out.Dest = r.Dst.String()
		}
	}
	if r.Gw != nil {
		out.Gateway = r.Gw.String()
	}
	if r.Src != nil {
		out.Source = r.Src.String()
	}
	return out
}

// UpdateRoutes replaces the main table with routes and returns the result.
// Routes without a gateway (link scope) go in first: the gateway routes
// need them to reach their next hop.
func (n *Network) UpdateRoutes(ctx context.Context, routes []Route) ([]Route, error) {
	n.mu.Lock()
	want := make([]netlink.Route, 0, len(routes))
	for _, r := range routes {
		nr, err := n.fromRoute(r)
		if err != nil {
			n.mu.Unlock()
			return nil, err
		}
		want = append(want, nr)
	}
	gatewaysLast(want)
	err := n.replaceRoutes(want)
	n.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return n.ListRoutes(ctx)
}

// gatewaysLast orders routes so that every route through a gateway comes
// after the link routes: the kernel accepts a gateway only if a route
// already in the table reaches it.
func gatewaysLast(routes []netlink.Route) {
	slices.SortStableFunc(routes, func(a, b netlink.Route) int {
		ag, bg := a.Gw != nil, b.Gw != nil
		switch {
		case ag == bg:
			return 0
		case !ag:
			return -1
		}
		return 1
	})
}

func (n *Network) replaceRoutes(want []netlink.Route) error {
	old, err := n.mainRoutes()
	if err != nil {
		return err
	}
	// The kernel's dump lists a default route before the link route its
	// gateway needs; the rollback below re-adds them in this order.
	gatewaysLast(old)
	for _, r := range old {
		if isKernelLinkLocal(r) {
			continue
		}
		if err := n.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("delete route %v: %w", r.Dst, err)
		}
	}
	for i := range want {
		if err := n.h.RouteReplace(&want[i]); err != nil {
			// Put the previous table back rather than leave half of each.
			for j := i - 1; j >= 0; j-- {
				_ = n.h.RouteDel(&want[j])
			}
			for k := range old {
				if !isKernelLinkLocal(old[k]) {
					_ = n.h.RouteReplace(&old[k])
				}
			}
			return fmt.Errorf("add route %v via %v: %w", want[i].Dst, want[i].Gw, err)
		}
	}
	return nil
}

// fromRoute turns a requested route into the main table's netlink route,
// checking each field.
func (n *Network) fromRoute(r Route) (netlink.Route, error) {
	nr := netlink.Route{Table: unix.RT_TABLE_MAIN, Scope: netlink.Scope(r.Scope), Flags: int(r.Flags), MTU: int(r.MTU)}
	if r.Scope > 255 {
		return nr, invalid("route scope %d", r.Scope)
	}
	loopback := false
	if r.Device != "" {
		l, err := n.h.LinkByName(r.Device)
		if err != nil {
			return nr, errdefs.Errorf(errdefs.ErrNotFound, "route device %s: %v", r.Device, err)
		}
		nr.LinkIndex = l.Attrs().Index
		loopback = l.Attrs().Flags&net.FlagLoopback != 0
	}
	var err error
	if nr.Dst, err = parseRouteDest(r.Dest); err != nil {
		return nr, err
	}
	if nr.Gw, err = parseRouteIP("gateway", r.Gateway); err != nil {
		return nr, err
	}
	if nr.Src, err = parseRouteIP("source", r.Source); err != nil {
		return nr, err
	}
	if nr.LinkIndex == 0 && nr.Gw == nil {
		return nr, invalid("route to %q has neither device nor gateway", r.Dest)
	}
	setRouteFamily(&nr, r.Family)
	// A default route through the loopback device (named, or reached by a
	// loopback gateway) sends every packet without a more specific route
	// back into the guest: the pod loses its network while the request
	// "succeeds".
	if isDefault(nr.Dst) && (loopback || (nr.Gw != nil && nr.Gw.IsLoopback())) {
		return nr, fmt.Errorf("%w: default route via the loopback device (device %q, gateway %q)", ErrInvalid, r.Device, r.Gateway)
	}
	return nr, nil
}

// parseRouteDest parses a route's destination: a CIDR, or an address
// alone (a host route); nil for the default route ("" or "default").
func parseRouteDest(dest string) (*net.IPNet, error) {
	if dest == "" || dest == "default" {
		return nil, nil
	}
	cidr := dest
	if !strings.Contains(cidr, "/") {
		if ip := net.ParseIP(cidr); ip != nil && ip.To4() != nil {
			cidr += "/32"
		} else {
			cidr += "/128"
		}
	}
	_, ipn, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, invalid("route destination %q", dest)
	}
	return ipn, nil
}

// parseRouteIP parses a route's gateway or source address (what names
// which); nil when s is empty.
func parseRouteIP(what, s string) (net.IP, error) {
	if s == "" {
		return nil, nil
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, invalid("route %s %q", what, s)
	}
	return ip, nil
}

// setRouteFamily makes nr IPv6 when the request says so or one of its
// addresses is, else IPv4; an IPv6 default route gets ::/0 as its
// destination.
func setRouteFamily(nr *netlink.Route, fam Family) {
	nr.Family = netlink.FAMILY_V4
	if fam == V6 || (nr.Dst != nil && nr.Dst.IP.To4() == nil) || (nr.Gw != nil && nr.Gw.To4() == nil) {
		nr.Family = netlink.FAMILY_V6
	}
	// The default destination is spelled out: netlink refuses a route
	// with neither destination nor gateway ("default dev eth0").
	if nr.Dst == nil && nr.Family == netlink.FAMILY_V6 {
		nr.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	} else if nr.Dst == nil {
		nr.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
}

// isDefault reports whether dst (nil: the v4 default) matches every
// address.
func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

// AddARPNeighbors adds (or replaces) static neighbour entries.
func (n *Network) AddARPNeighbors(ctx context.Context, neighs []Neighbor) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, nb := range neighs {
		ip := net.ParseIP(nb.IP.Address)
		if ip == nil {
			return invalid("neighbour address %q", nb.IP.Address)
		}
		mac, err := net.ParseMAC(nb.LLAddr)
		if err != nil {
			return invalid("neighbour %s lladdr %q", ip, nb.LLAddr)
		}
		l, err := n.h.LinkByName(nb.Device)
		if err != nil {
			return errdefs.Errorf(errdefs.ErrNotFound, "neighbour device %q: %v", nb.Device, err)
		}
		state := int(nb.State)
		if state == 0 {
			state = netlink.NUD_PERMANENT
		}
		fam := netlink.FAMILY_V4
		if ip.To4() == nil {
			fam = netlink.FAMILY_V6
		}
		ng := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: fam, State: state, Flags: int(nb.Flags), IP: ip, HardwareAddr: mac}
		if err := n.h.NeighSet(ng); err != nil {
			return fmt.Errorf("add neighbour %s on %s: %w", ip, nb.Device, err)
		}
	}
	return nil
}
