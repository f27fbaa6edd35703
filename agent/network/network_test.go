package network

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"

	"github.com/wren-vm/wren/internal/testnetns"
)

// testNetns creates a network namespace holding a veth pair and returns a
// handle bound to it. Nothing here touches the host's interfaces; the
// namespace disappears with the last handle.
func testNetns(t *testing.T) (*netlink.Handle, net.HardwareAddr) {
	t.Helper()
	h := testnetns.Handle(t)
	mac := net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0x00, 0x02}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0", HardwareAddr: mac}, PeerName: "veth1"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	peer, err := h.LinkByName("veth1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}
	return h, mac
}

func hostLinks(t *testing.T) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		a := l.Attrs()
		out = append(out, a.Name+"/"+a.HardwareAddr.String())
	}
	slices.Sort(out)
	return out
}

func TestUpdateInterfaceByMAC(t *testing.T) {
	hostBefore := hostLinks(t)
	h, mac := testNetns(t)
	n, err := New(h, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got, err := n.UpdateInterface(ctx, Interface{
		Name: "eth0", HwAddr: mac.String(), MTU: 1400,
		Addrs: []Addr{{Family: V4, Address: "10.10.0.2", Mask: "24"}, {Family: V6, Address: "fd00::2", Mask: "64"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatalf("not renamed: %v", err)
	}
	if l.Attrs().MTU != 1400 || l.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("mtu %d flags %v", l.Attrs().MTU, l.Attrs().Flags)
	}
	have := addrStrings(h, l, netlink.FAMILY_ALL)
	for _, want := range []string{"10.10.0.2/24", "fd00::2/64"} {
		if !slices.Contains(have, want) {
			t.Errorf("address %s missing from %v", want, have)
		}
	}
	if got.Name != "eth0" || got.MTU != 1400 || got.HwAddr != mac.String() {
		t.Errorf("returned %+v", got)
	}

	// A second update replaces the addresses rather than adding to them.
	if _, err := n.UpdateInterface(ctx, Interface{Name: "eth0", HwAddr: mac.String(), Addrs: []Addr{{Family: V4, Address: "10.20.0.2", Mask: "16"}}}); err != nil {
		t.Fatal(err)
	}
	if addrs := addrStrings(h, l, netlink.FAMILY_V4); !slices.Equal(addrs, []string{"10.20.0.2/16"}) {
		t.Fatalf("addresses after replace: %v", addrs)
	}

	checkUpdateInterfaceRejects(t, n, mac)
	// Loopback too, as Kata's agent lists it.
	if names := interfaceNames(t, n); !slices.Equal(names, []string{"eth0", "lo", "veth1"}) {
		t.Fatalf("ListInterfaces names %v", names)
	}
	if !slices.Equal(hostBefore, hostLinks(t)) {
		t.Fatal("host interfaces changed")
	}
}

// addrStrings lists the addresses of l in family, as CIDRs.
func addrStrings(h *netlink.Handle, l netlink.Link, family int) []string {
	addrs, _ := h.AddrList(l, family)
	var out []string
	for _, a := range addrs {
		out = append(out, a.IPNet.String())
	}
	return out
}

// checkUpdateInterfaceRejects: requests that are malformed or name no
// interface fail with their kind.
func checkUpdateInterfaceRejects(t *testing.T, n *Network, mac net.HardwareAddr) {
	t.Helper()
	ctx := context.Background()
	for name, iface := range map[string]Interface{
		"bad ip":     {Name: "eth0", HwAddr: mac.String(), Addrs: []Addr{{Address: "10.1.2"}}},
		"bad mask":   {Name: "eth0", HwAddr: mac.String(), Addrs: []Addr{{Address: "10.1.2.3", Mask: "33"}}},
		"family":     {Name: "eth0", HwAddr: mac.String(), Addrs: []Addr{{Family: V6, Address: "10.1.2.3"}}},
		"bad mac":    {Name: "eth0", HwAddr: "zz"},
		"long name":  {Name: "a-very-long-interface-name", HwAddr: mac.String()},
		"slash name": {Name: "eth/0", HwAddr: mac.String()},
	} {
		if _, err := n.UpdateInterface(ctx, iface); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
			t.Errorf("%s: got %v, want InvalidArgument", name, err)
		}
	}
	if _, err := n.UpdateInterface(ctx, Interface{Name: "eth9", HwAddr: "02:00:00:00:00:99"}); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Errorf("unknown MAC: %v", err)
	}
	if _, err := n.UpdateInterface(ctx, Interface{Name: "eth9", DevicePath: "02/00"}); errdefs.KindOf(err) != errdefs.ErrFailedPrecondition {
		t.Errorf("PCI path without listener: %v", err)
	}
}

// interfaceNames lists the names ListInterfaces returns, sorted.
func interfaceNames(t *testing.T, n *Network) []string {
	t.Helper()
	ifaces, err := n.ListInterfaces(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifaces {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	return names
}

func TestUpdateRoutesReplacesTableInDependencyOrder(t *testing.T) {
	h, mac := testNetns(t)
	n, _ := New(h, nil)
	ctx := context.Background()
	if _, err := n.UpdateInterface(ctx, Interface{Name: "eth0", HwAddr: mac.String(), Addrs: []Addr{{Address: "10.10.0.2", Mask: "24"}}}); err != nil {
		t.Fatal(err)
	}
	// The gateway routes come first in the request; they only work if the
	// link route to 172.16.0.0/24 is added before them.
	routes := []Route{
		{Dest: "default", Gateway: "172.16.0.1", Device: "eth0"},
		{Dest: "192.168.5.0/24", Gateway: "172.16.0.254", Device: "eth0"},
		{Dest: "172.16.0.0/24", Device: "eth0", Scope: unix.RT_SCOPE_LINK},
	}
	got, err := n.UpdateRoutes(ctx, routes)
	if err != nil {
		t.Fatal(err)
	}
	keys := v4RouteKeys(got)
	slices.Sort(keys)
	want := []string{" via 172.16.0.1 dev eth0", "172.16.0.0/24 via  dev eth0", "192.168.5.0/24 via 172.16.0.254 dev eth0"}
	if !slices.Equal(keys, want) {
		t.Fatalf("routes %q, want %q (the kernel's 10.10.0.0/24 must be gone: the table is replaced)", keys, want)
	}

	// Replacing again drops what the new table does not list.
	got, err = n.UpdateRoutes(ctx, []Route{{Dest: "10.10.0.0/24", Device: "eth0", Scope: unix.RT_SCOPE_LINK}})
	if err != nil {
		t.Fatal(err)
	}
	if keys := v4RouteKeys(got); !slices.Equal(keys, []string{"10.10.0.0/24 via  dev eth0"}) {
		t.Fatalf("after second update: %q", keys)
	}

	for name, r := range map[string]Route{
		"bad dest":    {Dest: "10.0.0.0/99", Device: "eth0"},
		"bad gateway": {Dest: "default", Gateway: "x"},
		"no via":      {Dest: "10.1.0.0/16"},
		"bad scope":   {Dest: "10.1.0.0/16", Device: "eth0", Scope: 300},
		"bad source":  {Dest: "10.1.0.0/16", Device: "eth0", Source: "nope"},
	} {
		if _, err := n.UpdateRoutes(ctx, []Route{r}); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := n.UpdateRoutes(ctx, []Route{{Dest: "10.1.0.0/16", Device: "nosuchdev"}}); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Errorf("unknown device: %v", err)
	}
	// A rejected request leaves the table as it was.
	got, _ = n.ListRoutes(ctx)
	if keys := v4RouteKeys(got); !slices.Equal(keys, []string{"10.10.0.0/24 via  dev eth0"}) {
		t.Fatalf("table changed by rejected requests: %q", keys)
	}
}

// v4RouteKeys describes the IPv4 routes as "dest via gateway dev device",
// in their order.
func v4Routes(routes []Route) []Route {
	return slices.DeleteFunc(slices.Clone(routes), func(r Route) bool { return r.Family != V4 })
}

func v4RouteKeys(routes []Route) []string {
	var keys []string
	for _, r := range routes {
		if r.Family == V4 {
			keys = append(keys, r.Dest+" via "+r.Gateway+" dev "+r.Device)
		}
	}
	return keys
}

func TestAddARPNeighbors(t *testing.T) {
	h, mac := testNetns(t)
	n, _ := New(h, nil)
	ctx := context.Background()
	if _, err := n.UpdateInterface(ctx, Interface{Name: "eth0", HwAddr: mac.String(), Addrs: []Addr{{Address: "10.10.0.2", Mask: "24"}}}); err != nil {
		t.Fatal(err)
	}
	err := n.AddARPNeighbors(ctx, []Neighbor{{IP: Addr{Address: "10.10.0.9"}, Device: "eth0", LLAddr: "02:00:00:00:00:09"}})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := h.LinkByName("eth0")
	neighs, err := h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, nb := range neighs {
		if nb.IP.Equal(net.ParseIP("10.10.0.9")) {
			found = true
			if nb.State != netlink.NUD_PERMANENT || nb.HardwareAddr.String() != "02:00:00:00:00:09" {
				t.Fatalf("neighbour %+v", nb)
			}
		}
	}
	if !found {
		t.Fatalf("neighbour missing from %v", neighs)
	}
	if err := n.AddARPNeighbors(ctx, []Neighbor{{IP: Addr{Address: "10.10.0.10"}, Device: "eth0", LLAddr: "nope"}}); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Fatalf("bad lladdr: %v", err)
	}
	if err := n.AddARPNeighbors(ctx, []Neighbor{{IP: Addr{Address: "10.10.0.10"}, Device: "eth7", LLAddr: "02:00:00:00:00:0a"}}); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Fatalf("unknown device: %v", err)
	}
}

func TestUpdateRoutesKernelRejectionRestoresTable(t *testing.T) {
	h, mac := testNetns(t)
	n, _ := New(h, nil)
	ctx := context.Background()
	if _, err := n.UpdateInterface(ctx, Interface{Name: "eth0", HwAddr: mac.String(), Addrs: []Addr{{Address: "10.10.0.2", Mask: "24"}}}); err != nil {
		t.Fatal(err)
	}
	before, _ := n.ListRoutes(ctx)
	// The gateway is on no connected network: the kernel refuses it after
	// the link route was already added.
	_, err := n.UpdateRoutes(ctx, []Route{{Dest: "172.16.0.0/24", Device: "eth0", Scope: unix.RT_SCOPE_LINK}, {Dest: "default", Gateway: "192.0.2.1", Device: "eth0"}})
	if err == nil {
		t.Fatal("unreachable gateway accepted")
	}
	after, _ := n.ListRoutes(ctx)
	// IPv4 only: the kernel adds the peer veth's fe80::/64 route whenever
	// that link comes up, which raced this comparison in CI.
	if !slices.Equal(v4Routes(before), v4Routes(after)) {
		t.Fatalf("table not restored:\nbefore %+v\nafter  %+v", v4Routes(before), v4Routes(after))
	}
}

// TestUpdateRoutesRejectionRestoresGatewayRoutes: the table put back after a
// refused route has a default route whose gateway is reached through a link
// route of the same table; the kernel takes it back only after that link
// route, whatever order its dump listed them in.
func TestUpdateRoutesRejectionRestoresGatewayRoutes(t *testing.T) {
	h, mac := testNetns(t)
	n, _ := New(h, nil)
	ctx := context.Background()
	if _, err := n.UpdateInterface(ctx, Interface{Name: "eth0", HwAddr: mac.String(), Addrs: []Addr{{Address: "10.10.0.2", Mask: "24"}}}); err != nil {
		t.Fatal(err)
	}
	before, err := n.UpdateRoutes(ctx, []Route{
		{Dest: "172.16.0.0/24", Device: "eth0", Scope: unix.RT_SCOPE_LINK},
		{Dest: "default", Gateway: "172.16.0.1", Device: "eth0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.UpdateRoutes(ctx, []Route{{Dest: "default", Gateway: "192.0.2.1", Device: "eth0"}}); err == nil {
		t.Fatal("unreachable gateway accepted")
	}
	after, _ := n.ListRoutes(ctx)
	if !slices.Equal(v4RouteKeys(before), v4RouteKeys(after)) {
		t.Fatalf("table not restored:\nbefore %q\nafter  %q", v4RouteKeys(before), v4RouteKeys(after))
	}
}

// TestUpdateRoutesDeviceOnlyDefault: a default route through a device with
// no gateway (point-to-point CNIs: "default dev eth0 scope link") is
// accepted and listed as the default.
func TestUpdateRoutesDeviceOnlyDefault(t *testing.T) {
	h, mac := testNetns(t)
	n, _ := New(h, nil)
	ctx := context.Background()
	if _, err := n.UpdateInterface(ctx, Interface{Name: "eth0", HwAddr: mac.String(), Addrs: []Addr{{Address: "10.10.0.2", Mask: "24"}}}); err != nil {
		t.Fatal(err)
	}
	got, err := n.UpdateRoutes(ctx, []Route{{Dest: "default", Device: "eth0", Scope: unix.RT_SCOPE_LINK}})
	if err != nil {
		t.Fatal(err)
	}
	if keys := v4RouteKeys(got); !slices.Equal(keys, []string{" via  dev eth0"}) {
		t.Fatalf("routes %q, want the device-only default", keys)
	}
}

// TestUpdateRoutesRefusesDefaultViaLoopback: a default route through the
// loopback device (by name or by a loopback gateway) would send all the
// guest's traffic nowhere; it is ErrInvalid and the table stays as it was.
func TestUpdateRoutesRefusesDefaultViaLoopback(t *testing.T) {
	h, mac := testNetns(t)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	// Up, as in a guest: the kernel refuses any route via a device that
	// is down, which would hide the agent's own check.
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	n, _ := New(h, nil)
	ctx := context.Background()
	if _, err := n.UpdateInterface(ctx, Interface{Name: "eth0", HwAddr: mac.String(), Addrs: []Addr{{Address: "10.10.0.2", Mask: "24"}}}); err != nil {
		t.Fatal(err)
	}
	table := []Route{{Dest: "10.10.0.0/24", Device: "eth0", Scope: unix.RT_SCOPE_LINK}, {Dest: "default", Gateway: "10.10.0.1", Device: "eth0"}}
	before, err := n.UpdateRoutes(ctx, table)
	if err != nil {
		t.Fatal(err)
	}
	for name, rs := range map[string][]Route{
		"default dev lo":               {{Dest: "default", Device: "lo"}},
		"empty dest dev lo":            {{Device: "lo"}},
		"0.0.0.0/0 dev lo":             {{Dest: "10.20.0.0/16", Device: "eth0"}, {Dest: "0.0.0.0/0", Device: "lo"}},
		"::/0 dev lo":                  {{Dest: "::/0", Device: "lo", Family: V6}},
		"default via 127.0.0.1":        {{Dest: "default", Gateway: "127.0.0.1"}},
		"default via ::1 dev lo":       {{Gateway: "::1", Device: "lo", Family: V6}},
		"default via 127.0.0.1 dev lo": {{Gateway: "127.0.0.1", Device: "lo"}},
	} {
		if _, err := n.UpdateRoutes(ctx, rs); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
		if after, _ := n.ListRoutes(ctx); !slices.Equal(withoutKernelLinkLocal(before), withoutKernelLinkLocal(after)) {
			t.Errorf("%s changed the table:\nbefore %+v\nafter  %+v", name, before, after)
			if _, err := n.UpdateRoutes(ctx, table); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Routes to a prefix through lo are the caller's business.
	if _, err := n.UpdateRoutes(ctx, []Route{{Dest: "192.0.2.0/24", Device: "lo"}}); err != nil {
		t.Errorf("prefix route via lo: %v", err)
	}
}

// withoutKernelLinkLocal drops the fe80::/64 routes the kernel adds on its
// own, when an interface's link-local address comes up: a comparison of
// two listings taken moments apart must not depend on when that happens.
func withoutKernelLinkLocal(rs []Route) []Route {
	return slices.DeleteFunc(slices.Clone(rs), func(r Route) bool { return r.Dest == "fe80::/64" })
}

// TestListRoutesKeepsTheKernelsRoutes: ListRoutes lists the main table as
// Kata's agent does, the routes the kernel made itself included: here the
// fe80::/64 of an interface that is up.
func TestListRoutesKeepsTheKernelsRoutes(t *testing.T) {
	h, _ := testNetns(t)
	n, _ := New(h, nil)
	veth0, err := h.LinkByName("veth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(veth0); err != nil {
		t.Fatal(err)
	}
	// The kernel adds the link-local route once the link-local address is
	// configured, which it does on its own after the link comes up.
	var kernelHas bool
	for deadline := time.Now().Add(10 * time.Second); !kernelHas && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		rs, err := h.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		kernelHas = slices.ContainsFunc(rs, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == "fe80::/64" })
	}
	if !kernelHas {
		t.Fatal("the kernel made no fe80::/64 route for the test's veth")
	}
	routes, err := n.ListRoutes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var v6 []string
	for _, r := range routes {
		if r.Family == V6 {
			v6 = append(v6, r.Dest+" dev "+r.Device)
		}
	}
	if !slices.ContainsFunc(v6, func(s string) bool { return strings.HasPrefix(s, "fe80::/64 dev veth") }) {
		t.Errorf("IPv6 routes %q lack the kernel's fe80::/64", v6)
	}
}
