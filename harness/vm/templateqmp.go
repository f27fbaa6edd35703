package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// vhostDev is a vhost-user device that a template machine gets by hot-plug.
type vhostDev struct {
	chardev, sock string
	driver, id    string
	port          string         // root port id
	props         map[string]any // beyond driver, id, chardev and bus
}

func vhostVsock(dir string) vhostDev {
	return vhostDev{chardev: "vsock", sock: filepath.Join(dir, vhostSockFile),
		driver: "vhost-user-vsock-pci", id: "vsock0", port: vsockPortID}
}

func vhostFS(dir string) vhostDev {
	return vhostDev{chardev: "virtiofs", sock: filepath.Join(dir, virtiofsSock),
		driver: "vhost-user-fs-pci", id: "virtiofs0", port: fsPortID,
		props: map[string]any{"tag": SharedTag, "queue-size": 1024}}
}

// hotplugVhostUser connects QEMU to the backend's socket (chardev-add)
// and plugs the device into its root port.
func hotplugVhostUser(ctx context.Context, q *QMP, d vhostDev) error {
	err := q.Execute(ctx, "chardev-add", map[string]any{
		"id": d.chardev,
		"backend": map[string]any{"type": "socket", "data": map[string]any{
			"addr":   map[string]any{"type": "unix", "data": map[string]any{"path": d.sock}},
			"server": false,
		}},
	}, nil)
	if err != nil {
		return fmt.Errorf("hot-plug %s: %w", d.id, err)
	}
	args := map[string]any{"driver": d.driver, "id": d.id, "chardev": d.chardev, "bus": d.port}
	for k, v := range d.props {
		args[k] = v
	}
	if err := q.Execute(ctx, "device_add", args, nil); err != nil {
		_ = q.Execute(ctx, "chardev-remove", map[string]any{"id": d.chardev}, nil) // best effort: err is the one to report
		return fmt.Errorf("hot-plug %s: %w", d.id, err)
	}
	return nil
}

// unplugVhostUser asks the guest to release the device (PCIe hot-unplug:
// the guest's pciehp waits its 5 s attention-button grace first), waits
// until QEMU has deleted it and removes its chardev.
func unplugVhostUser(ctx context.Context, q *QMP, d vhostDev) error {
	if err := q.Execute(ctx, "device_del", map[string]any{"id": d.id}, nil); err != nil {
		return fmt.Errorf("unplug %s: %w", d.id, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		var props []struct {
			Name string `json:"name"`
		}
		if err := q.Execute(ctx, "qom-list", map[string]any{"path": "/machine/peripheral"}, &props); err != nil {
			return fmt.Errorf("unplug %s: %w", d.id, err)
		}
		if !slices.ContainsFunc(props, func(p struct {
			Name string `json:"name"`
		}) bool {
			return p.Name == d.id
		}) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("unplug %s: the guest did not release it: %w", d.id, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	// QEMU lets go of the chardev a moment after the device is gone.
	for {
		err := q.Execute(ctx, "chardev-remove", map[string]any{"id": d.chardev}, nil)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("unplug %s: %w", d.id, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitDriverOK waits until the guest's driver has set DRIVER_OK on the
// device: for virtio-fs the mount tag is registered then, so a mount that
// follows finds it.
func waitDriverOK(ctx context.Context, q *QMP, d vhostDev) error {
	path := "/machine/peripheral/" + d.id + "/virtio-backend"
	for {
		var st struct {
			Status json.RawMessage `json:"status"`
		}
		if err := q.Execute(ctx, "x-query-virtio-status", map[string]any{"path": path}, &st); err != nil {
			return fmt.Errorf("%s status: %w", d.id, err)
		}
		if driverOK(st.Status) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: the guest's driver never became ready: %w", d.id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// driverOK reads x-query-virtio-status's status: a number in some QEMU
// versions, {"statuses": ["ACKNOWLEDGE", ..., "DRIVER_OK"]} in 7.2.
func driverOK(raw json.RawMessage) bool {
	var n uint8
	if json.Unmarshal(raw, &n) == nil {
		return n&4 != 0
	}
	var s struct {
		Statuses []string `json:"statuses"`
	}
	if json.Unmarshal(raw, &s) == nil {
		for _, x := range s.Statuses {
			if strings.Contains(x, "DRIVER_OK") {
				return true
			}
		}
	}
	return false
}

// setIgnoreShared makes migration leave out RAM mapped shared: the
// template's and the clone's memory files carry it instead.
func setIgnoreShared(ctx context.Context, q *QMP) error {
	return q.Execute(ctx, "migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}},
	}, nil)
}

// waitMigration polls query-migrate until the migration (outgoing or
// incoming) has completed or failed.
func waitMigration(ctx context.Context, q *QMP) error {
	for {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := q.Execute(ctx, "query-migrate", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration still %q: %w", st.Status, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitQMP connects to QEMU's QMP socket once QEMU serves it.
func (v *VM) waitQMP(ctx context.Context) (*QMP, error) {
	qemu := v.proc("qemu")
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		q, err := v.QMPDial(ctx)
		if err == nil {
			return q, nil
		}
		select {
		case <-qemu.Exited():
			return nil, fmt.Errorf("QEMU exited: %w\n%s", err, v.diagnostics())
		case <-ctx.Done():
			return nil, fmt.Errorf("QMP: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
