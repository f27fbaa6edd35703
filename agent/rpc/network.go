package rpc

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/agent/network"
	"github.com/wren-vm/wren/protocols/agentpb"
	"github.com/wren-vm/wren/protocols/typespb"
)

func family(f typespb.IPFamily) network.Family {
	if f == typespb.IPFamily_v6 {
		return network.V6
	}
	return network.V4
}

func pbFamily(f network.Family) typespb.IPFamily {
	if f == network.V6 {
		return typespb.IPFamily_v6
	}
	return typespb.IPFamily_v4
}

func ifaceFromPB(in *typespb.Interface) network.Interface {
	out := network.Interface{Device: in.Device, Name: in.Name, MTU: in.Mtu, HwAddr: in.HwAddr, DevicePath: in.DevicePath, Type: in.Type, RawFlags: in.RawFlags}
	for _, a := range in.IPAddresses {
		if a != nil {
			out.Addrs = append(out.Addrs, network.Addr{Family: family(a.Family), Address: a.Address, Mask: a.Mask})
		}
	}
	return out
}

func ifaceToPB(in network.Interface) *typespb.Interface {
	out := &typespb.Interface{Device: in.Device, Name: in.Name, Mtu: in.MTU, HwAddr: in.HwAddr, DevicePath: in.DevicePath, Type: in.Type, RawFlags: in.RawFlags}
	for _, a := range in.Addrs {
		out.IPAddresses = append(out.IPAddresses, &typespb.IPAddress{Family: pbFamily(a.Family), Address: a.Address, Mask: a.Mask})
	}
	return out
}

func routesToPB(rs []network.Route) *agentpb.Routes {
	out := &agentpb.Routes{}
	for _, r := range rs {
		out.Routes = append(out.Routes, &typespb.Route{Dest: r.Dest, Gateway: r.Gateway, Device: r.Device, Source: r.Source,
			Scope: r.Scope, Family: pbFamily(r.Family), Flags: r.Flags, Mtu: r.MTU})
	}
	return out
}

// UpdateInterface configures one NIC and returns its resulting state.
func (a *Agent) UpdateInterface(ctx context.Context, req *agentpb.UpdateInterfaceRequest) (*typespb.Interface, error) {
	if a.guest.Network == nil {
		return nil, notConfigured("networking")
	}
	if req.Interface == nil {
		return nil, status.Error(codes.InvalidArgument, "no interface given")
	}
	got, err := a.guest.Network.UpdateInterface(ctx, ifaceFromPB(req.Interface))
	if err != nil {
		return nil, toStatus(err)
	}
	return ifaceToPB(got), nil
}

// UpdateRoutes replaces the routing table.
func (a *Agent) UpdateRoutes(ctx context.Context, req *agentpb.UpdateRoutesRequest) (*agentpb.Routes, error) {
	if a.guest.Network == nil {
		return nil, notConfigured("networking")
	}
	// A missing table is a malformed request, not an order to drop every
	// route; an empty one does clear the table.
	if req.Routes == nil {
		return nil, status.Error(codes.InvalidArgument, "no routes given")
	}
	var rs []network.Route
	for _, r := range req.Routes.Routes {
		if r == nil {
			return nil, status.Error(codes.InvalidArgument, "empty route")
		}
		rs = append(rs, network.Route{Dest: r.Dest, Gateway: r.Gateway, Device: r.Device, Source: r.Source,
			Scope: r.Scope, Family: family(r.Family), Flags: r.Flags, MTU: r.Mtu})
	}
	got, err := a.guest.Network.UpdateRoutes(ctx, rs)
	if err != nil {
		return nil, toStatus(err)
	}
	return routesToPB(got), nil
}

// ListInterfaces describes the guest's interfaces.
func (a *Agent) ListInterfaces(ctx context.Context, req *agentpb.ListInterfacesRequest) (*agentpb.Interfaces, error) {
	if a.guest.Network == nil {
		return nil, notConfigured("networking")
	}
	ifaces, err := a.guest.Network.ListInterfaces(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &agentpb.Interfaces{}
	for _, i := range ifaces {
		out.Interfaces = append(out.Interfaces, ifaceToPB(i))
	}
	return out, nil
}

// ListRoutes returns the guest's routing table.
func (a *Agent) ListRoutes(ctx context.Context, req *agentpb.ListRoutesRequest) (*agentpb.Routes, error) {
	if a.guest.Network == nil {
		return nil, notConfigured("networking")
	}
	rs, err := a.guest.Network.ListRoutes(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return routesToPB(rs), nil
}

// AddARPNeighbors adds static neighbour entries.
func (a *Agent) AddARPNeighbors(ctx context.Context, req *agentpb.AddARPNeighborsRequest) (*emptypb.Empty, error) {
	if a.guest.Network == nil {
		return nil, notConfigured("networking")
	}
	var ns []network.Neighbor
	if req.Neighbors != nil {
		for _, n := range req.Neighbors.ARPNeighbors {
			if n == nil || n.ToIPAddress == nil {
				return nil, status.Error(codes.InvalidArgument, "neighbour without an address")
			}
			ns = append(ns, network.Neighbor{IP: network.Addr{Family: family(n.ToIPAddress.Family), Address: n.ToIPAddress.Address, Mask: n.ToIPAddress.Mask},
				Device: n.Device, LLAddr: n.Lladdr, State: n.State, Flags: n.Flags})
		}
	}
	if err := a.guest.Network.AddARPNeighbors(ctx, ns); err != nil {
		return nil, toStatus(err)
	}
	return &emptypb.Empty{}, nil
}
