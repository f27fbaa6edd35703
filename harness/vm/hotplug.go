package vm

import (
	"context"
	"fmt"
)

// HotplugBlock attaches a disk image as a virtio-blk device on a free
// hotplug root port with QMP (blockdev-add, then device_add), as a Kata
// runtime does for a block volume, and returns the disk's Kata PCI path
// ("<root port slot>/00") for the agent's blk storage driver.
func (v *VM) HotplugBlock(ctx context.Context, q *QMP, id, file string, readOnly bool) (string, error) {
	v.mu.Lock()
	port := -1
	if v.hotplugUsed == nil {
		v.hotplugUsed = map[int]string{}
	}
	for i := 0; i < HotplugPorts; i++ {
		if _, used := v.hotplugUsed[i]; !used {
			port = i
			v.hotplugUsed[i] = id
			break
		}
	}
	v.mu.Unlock()
	if port < 0 {
		return "", fmt.Errorf("hotplug %s: all %d hotplug ports are in use", id, HotplugPorts)
	}
	release := func() {
		v.mu.Lock()
		delete(v.hotplugUsed, port)
		v.mu.Unlock()
	}
	node := "drive-" + id
	err := q.Execute(ctx, "blockdev-add", map[string]any{
		"driver":    "raw",
		"node-name": node,
		"read-only": readOnly,
		"file":      map[string]any{"driver": "file", "filename": file, "read-only": readOnly},
	}, nil)
	if err != nil {
		release()
		return "", fmt.Errorf("hotplug %s: %w", id, err)
	}
	err = q.Execute(ctx, "device_add", map[string]any{
		"driver": "virtio-blk-pci",
		"id":     id,
		"drive":  node,
		"bus":    fmt.Sprintf("hp%d", port),
	}, nil)
	if err != nil {
		_ = q.Execute(ctx, "blockdev-del", map[string]any{"node-name": node}, nil) // best effort: err is the one to report
		release()
		return "", fmt.Errorf("hotplug %s: %w", id, err)
	}
	return fmt.Sprintf("%02x/00", hotplugSlot0+port), nil
}
