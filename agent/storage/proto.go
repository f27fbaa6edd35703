package storage

import (
	"context"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/protocols/agentpb"
	"github.com/wren-vm/wren/protocols/typespb"
)

// FromProto converts Storage messages; a nil entry is InvalidArgument.
func FromProto(s []*agentpb.Storage) ([]Volume, error) {
	vols := make([]Volume, 0, len(s))
	for i, st := range s {
		if st == nil {
			return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "storage %d is empty", i)
		}
		v := Volume{
			Driver:        st.Driver,
			DriverOptions: st.DriverOptions,
			Source:        st.Source,
			FSType:        st.Fstype,
			Options:       st.Options,
			MountPoint:    st.MountPoint,
			Shared:        st.Shared,
		}
		if g := st.FsGroup; g != nil {
			v.FSGroup = &FSGroup{GID: g.GroupId, OnRootMismatch: g.GroupChangePolicy == typespb.FSGroupChangePolicy_OnRootMismatch}
		}
		vols = append(vols, v)
	}
	return vols, nil
}

// Mount mounts the storages of a CreateSandbox (owner "") or
// CreateContainer (owner = container id) request; see MountVolumes.
func (m *Manager) Mount(ctx context.Context, owner string, s []*agentpb.Storage) error {
	vols, err := FromProto(s)
	if err != nil {
		return err
	}
	return m.MountVolumes(ctx, owner, vols)
}
