package rpc

import (
	"reflect"
	"testing"

	"github.com/wren-vm/wren/agent/device"
	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/sandbox"
	"github.com/wren-vm/wren/agent/storage"
	"github.com/wren-vm/wren/protocols/agentpb"
	"github.com/wren-vm/wren/protocols/typespb"
)

func TestVolumesFromPB(t *testing.T) {
	got, err := volumesFromPB([]*agentpb.Storage{{
		Driver: "ephemeral", DriverOptions: []string{"a"}, Source: "shm", Fstype: "tmpfs", MountPoint: "/run/kata-containers/sandbox/shm",
		Options: []string{"size=1m"}, Shared: true,
		FsGroup: &agentpb.FSGroup{GroupId: 77, GroupChangePolicy: typespb.FSGroupChangePolicy_OnRootMismatch},
	}, {Driver: "local", MountPoint: "/x", FsGroup: &agentpb.FSGroup{GroupId: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []storage.Volume{{
		Driver: "ephemeral", DriverOptions: []string{"a"}, Source: "shm", FSType: "tmpfs", MountPoint: "/run/kata-containers/sandbox/shm",
		Options: []string{"size=1m"}, Shared: true, FSGroup: &storage.FSGroup{GID: 77, OnRootMismatch: true},
	}, {Driver: "local", MountPoint: "/x", FSGroup: &storage.FSGroup{GID: 5}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if _, err := volumesFromPB([]*agentpb.Storage{nil}); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Errorf("nil storage: %v", err)
	}
}

func TestDevicesFromPB(t *testing.T) {
	got, err := devicesFromPB([]*agentpb.Device{{Id: "02/00", Type: "blk", VmPath: "/dev/vdb", ContainerPath: "/dev/xvdb", Options: []string{"o"}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []device.Device{{ID: "02/00", Type: "blk", VMPath: "/dev/vdb", ContainerPath: "/dev/xvdb", Options: []string{"o"}}}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := devicesFromPB([]*agentpb.Device{nil}); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Errorf("nil device: %v", err)
	}
}

func TestUserFromPB(t *testing.T) {
	if u := userFromPB(nil); u != nil {
		t.Errorf("nil string_user: %+v", u)
	}
	if u := userFromPB(&agentpb.StringUser{}); u != nil {
		t.Errorf("empty string_user: %+v", u)
	}
	u := userFromPB(&agentpb.StringUser{Uid: "app", Gid: "www-data", AdditionalGids: []string{"audio", "29"}})
	if u == nil || u.User != "app" || u.Group != "www-data" || !reflect.DeepEqual(u.Additional, []string{"audio", "29"}) {
		t.Errorf("string_user: %+v", u)
	}
}

func TestSharedMountsFromPB(t *testing.T) {
	got := sharedMountsFromPB([]*agentpb.SharedMount{nil, {Name: "s", SrcCtr: "side", SrcPath: "/a", DstCtr: "app", DstPath: "/b"}})
	want := []sandbox.SharedMount{{Name: "s", SrcCtr: "side", SrcPath: "/a", DstCtr: "app", DstPath: "/b"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
