package main

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/harness/kata"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// shareBundle is `wrenctl run --shared-dir`: for an agent in a pod VM, the
// bundle's rootfs is placed into the host side of the virtio-fs share as
// <id>/rootfs and the spec points at it as the guest sees it, and the
// sandbox gets the storage that mounts the share, as a Kata shim does. The
// returned func removes the copy. Without a shared directory nothing
// changes (the agent runs on this host and reads the bundle in place).
func shareBundle(sharedDir, id string, spec *specs.Spec) ([]*agentpb.Storage, func(), error) {
	if sharedDir == "" {
		return nil, func() {}, nil
	}
	guest, remove, err := kata.ShareRootfs(sharedDir, id, spec.Root.Path)
	if err != nil {
		return nil, nil, fmt.Errorf("--shared-dir: %w", err)
	}
	spec.Root.Path = guest
	return []*agentpb.Storage{kata.SharedStorage()}, func() { _ = remove() }, nil
}
