package rpc

import (
	"github.com/wren-vm/wren/agent/device"
	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/sandbox"
	"github.com/wren-vm/wren/agent/storage"
	"github.com/wren-vm/wren/agent/userdb"
	"github.com/wren-vm/wren/protocols/agentpb"
	"github.com/wren-vm/wren/protocols/typespb"
)

// volumesFromPB converts Storage messages into the storage layer's
// volumes; a nil entry is an invalid argument.
func volumesFromPB(s []*agentpb.Storage) ([]storage.Volume, error) {
	vols := make([]storage.Volume, 0, len(s))
	for i, st := range s {
		if st == nil {
			return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "storage %d is empty", i)
		}
		v := storage.Volume{
			Driver:        st.Driver,
			DriverOptions: st.DriverOptions,
			Source:        st.Source,
			FSType:        st.Fstype,
			Options:       st.Options,
			MountPoint:    st.MountPoint,
			Shared:        st.Shared,
		}
		if g := st.FsGroup; g != nil {
			v.FSGroup = &storage.FSGroup{GID: g.GroupId, OnRootMismatch: g.GroupChangePolicy == typespb.FSGroupChangePolicy_OnRootMismatch}
		}
		vols = append(vols, v)
	}
	return vols, nil
}

// devicesFromPB converts Device messages; a nil entry is an invalid
// argument.
func devicesFromPB(ds []*agentpb.Device) ([]device.Device, error) {
	out := make([]device.Device, 0, len(ds))
	for i, d := range ds {
		if d == nil {
			return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "device %d is empty", i)
		}
		out = append(out, device.Device{ID: d.Id, Type: d.Type, VMPath: d.VmPath, ContainerPath: d.ContainerPath, Options: d.Options})
	}
	return out, nil
}

// userFromPB converts a string_user; an absent or empty one is nil.
func userFromPB(u *agentpb.StringUser) *userdb.Spec {
	if u == nil || (u.Uid == "" && u.Gid == "" && len(u.AdditionalGids) == 0) {
		return nil
	}
	return &userdb.Spec{User: u.Uid, Group: u.Gid, Additional: u.AdditionalGids}
}

// sharedMountsFromPB converts shared_mounts; nil entries are skipped.
func sharedMountsFromPB(ms []*agentpb.SharedMount) []sandbox.SharedMount {
	var out []sandbox.SharedMount
	for _, m := range ms {
		if m != nil {
			out = append(out, sandbox.SharedMount{Name: m.Name, SrcCtr: m.SrcCtr, SrcPath: m.SrcPath, DstCtr: m.DstCtr, DstPath: m.DstPath})
		}
	}
	return out
}
