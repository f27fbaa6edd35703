package rpc

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/agent/storage"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// UpdateEphemeralMounts remounts ephemeral tmpfs storages with new options;
// only mount points the storage manager mounted with the ephemeral driver
// qualify (storage.Manager.UpdateEphemeral).
func (a *Agent) UpdateEphemeralMounts(ctx context.Context, req *agentpb.UpdateEphemeralMountsRequest) (*emptypb.Empty, error) {
	if a.guest.Storage == nil {
		return nil, notConfigured("storage")
	}
	vols, err := volumesFromPB(req.Storages)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := a.guest.Storage.UpdateEphemeral(ctx, vols); err != nil {
		return nil, toStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// RemoveStaleVirtiofsShareMounts stats every mount below the shared
// directory so virtiofsd lets go of stale inodes.
func (a *Agent) RemoveStaleVirtiofsShareMounts(ctx context.Context, req *agentpb.RemoveStaleVirtiofsShareMountsRequest) (*emptypb.Empty, error) {
	if a.guest.Storage == nil {
		return nil, notConfigured("storage")
	}
	if err := a.guest.Storage.TouchSharedMounts(ctx); err != nil {
		return nil, toStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// GetVolumeStats reports byte and inode usage of a guest volume.
func (a *Agent) GetVolumeStats(ctx context.Context, req *agentpb.VolumeStatsRequest) (*agentpb.VolumeStatsResponse, error) {
	b, in, err := storage.VolumeStats(req.VolumeGuestPath)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentpb.VolumeStatsResponse{
		Usage: []*agentpb.VolumeUsage{
			{Available: b.Available, Total: b.Total, Used: b.Used, Unit: agentpb.VolumeUsage_BYTES},
			{Available: in.Available, Total: in.Total, Used: in.Used, Unit: agentpb.VolumeUsage_INODES},
		},
		VolumeCondition: &agentpb.VolumeCondition{Abnormal: false, Message: "OK"},
	}, nil
}

// ResizeVolume grows a mounted guest volume's filesystem online.
func (a *Agent) ResizeVolume(ctx context.Context, req *agentpb.ResizeVolumeRequest) (*emptypb.Empty, error) {
	if err := storage.ResizeVolume(ctx, req.VolumeGuestPath, req.Size); err != nil {
		return nil, toStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// AddSwap enables swap on the virtio-blk disk at a PCI path (one slot per
// element, from the root bus down).
func (a *Agent) AddSwap(ctx context.Context, req *agentpb.AddSwapRequest) (*emptypb.Empty, error) {
	if a.guest.Devices == nil {
		return nil, notConfigured("device hotplug")
	}
	if len(req.PCIPath) == 0 {
		return nil, status.Error(codes.InvalidArgument, "empty PCI path")
	}
	hops := make([]string, len(req.PCIPath))
	for i, slot := range req.PCIPath {
		if slot >= 0x20 {
			return nil, status.Errorf(codes.InvalidArgument, "PCI slot %#x out of range", slot)
		}
		hops[i] = fmt.Sprintf("%02x", slot)
	}
	dev, err := a.guest.Devices.BlockByPCIPath(ctx, strings.Join(hops, "/"))
	if err != nil {
		return nil, toStatus(err)
	}
	if err := storage.Swapon(dev); err != nil {
		return nil, toStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// AddSwapPath enables swap on a file or device path.
func (a *Agent) AddSwapPath(ctx context.Context, req *agentpb.AddSwapPathRequest) (*emptypb.Empty, error) {
	if err := storage.Swapon(req.Path); err != nil {
		return nil, toStatus(err)
	}
	return &emptypb.Empty{}, nil
}
