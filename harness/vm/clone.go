package vm

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// CloneStats says where a clone's start went.
type CloneStats struct {
	// CheckMS is the time before QEMU started: manifest, boot file and
	// memory file checks and the copy of the template's memory.
	CheckMS float64 `json:"check_ms"`
	// CopyBytes is how much memory the clone got from the template.
	CopyBytes int64 `json:"copy_bytes"`
}

// StartClone starts a pod VM in cfg.Dir as a clone of the template in
// tdir: it checks the template against the boot files (cfg.Kernel and
// cfg.Initrd when given, else the template's) and its own hashes, copies
// the template's memory into a memfd of its own, restores QEMU's state,
// hot-plugs its own virtio-fs share and vsock device (wren-vsockd with
// cfg.GuestCID), waits for the agent and refreshes the guest's clock and
// random pool. Everything checkable is checked before QEMU starts.
func StartClone(ctx context.Context, tdir string, cfg Config) (_ *VM, _ *CloneStats, err error) {
	t0 := time.Now()
	m, err := LoadTemplate(tdir)
	if err != nil {
		return nil, nil, err
	}
	if tdir, err = filepath.Abs(tdir); err != nil {
		return nil, nil, err
	}
	if err := m.configure(&cfg); err != nil {
		return nil, nil, err
	}
	if err := cfg.fill(); err != nil {
		return nil, nil, err
	}
	if err := m.verify(ctx, tdir, &cfg); err != nil {
		return nil, nil, err
	}
	mem, stats, err := copyTemplateMemory(tdir, m)
	if err != nil {
		return nil, nil, err
	}
	defer mem.Close() // QEMU holds its own once it has started
	stats.CheckMS = float64(time.Since(t0).Microseconds()) / 1000

	v := newVM(&cfg)
	v.Accel, v.Template = m.Accel, tdir
	if err := v.prepareStateDir(&cfg); err != nil {
		return nil, nil, err
	}
	defer func() {
		if err == nil {
			return
		}
		if serr := v.Stop(); serr != nil {
			err = fmt.Errorf("%w (stopping what had started: %v)", err, serr)
		}
	}()
	if err := v.startBackends(ctx, &cfg); err != nil {
		return nil, nil, err
	}
	if err := v.restoreClone(ctx, &cfg, m, mem); err != nil {
		return nil, nil, err
	}
	return v, stats, nil
}

// configure completes a clone's configuration from the template: the
// machine must be the template's, the boot files default to its.
func (m *Manifest) configure(cfg *Config) error {
	if cfg.Kernel == "" {
		cfg.Kernel = m.Kernel.Path
	}
	if cfg.Initrd == "" {
		cfg.Initrd = m.Initrd.Path
	}
	if cfg.Image == "" && m.Image != nil {
		cfg.Image = m.Image.Path
	}
	if cfg.MemoryMiB != 0 && cfg.MemoryMiB != m.MemoryMiB {
		return fmt.Errorf("vm: the template has %d MiB of memory, not %d", m.MemoryMiB, cfg.MemoryMiB)
	}
	if cfg.CPUs != 0 && cfg.CPUs != m.CPUs {
		return fmt.Errorf("vm: the template has %d vCPUs, not %d", m.CPUs, cfg.CPUs)
	}
	cfg.MemoryMiB, cfg.CPUs = m.MemoryMiB, m.CPUs
	if cfg.Accel != "" && cfg.Accel != "auto" && cfg.Accel != m.Accel {
		return fmt.Errorf("vm: the template runs under %s, not %s", m.Accel, cfg.Accel)
	}
	cfg.Accel = m.Accel
	// The firmware's ROM is part of the restored machine.
	cfg.Firmware = m.Firmware
	if cfg.Firmware == "" {
		cfg.Firmware = "seabios"
	}
	return nil
}

// verify checks, before anything starts, that the clone would boot what
// the template booted: the same kernel, initramfs, DAX image, QEMU and
// machine.
func (m *Manifest) verify(ctx context.Context, tdir string, cfg *Config) error {
	for _, f := range []struct {
		what string
		id   *FileID
		path string
	}{{"kernel", &m.Kernel, cfg.Kernel}, {"initramfs", &m.Initrd, cfg.Initrd}, {"DAX image", m.Image, cfg.Image}} {
		if f.id == nil {
			if f.path != "" {
				return fmt.Errorf("vm: template %s has no %s; a clone cannot add one", tdir, f.what)
			}
			continue
		}
		if err := f.id.matches(f.path); err != nil {
			return fmt.Errorf("vm: template %s was made from another %s: %w (make the template again)", tdir, f.what, err)
		}
	}
	ver, err := qemuVersion(ctx, cfg.QEMU)
	if err != nil {
		return err
	}
	if ver != m.QEMUVersion {
		return fmt.Errorf("vm: template %s was saved by %q; this QEMU is %q", tdir, m.QEMUVersion, ver)
	}
	// This wren's machine for the template must be the one recorded.
	tcfg := *cfg
	tcfg.Dir, tcfg.Kernel, tcfg.Initrd = m.Dir, m.Kernel.Path, m.Initrd.Path
	if m.Image != nil {
		tcfg.Image = m.Image.Path
	}
	args, err := templateArgs(&tcfg, m.Accel, filepath.Join(m.Dir, templateMem), m.Cmdline)
	if err != nil {
		return err
	}
	if !slices.Equal(args, m.Args) {
		return fmt.Errorf("vm: template %s describes another machine than this wren builds (made by another version?): make it again", tdir)
	}
	return nil
}

// copyTemplateMemory copies the template's memory into a new memfd and
// checks it against the digest taken when the template was saved.
func copyTemplateMemory(tdir string, m *Manifest) (*os.File, *CloneStats, error) {
	src, err := os.Open(filepath.Join(tdir, templateMem))
	if err != nil {
		return nil, nil, fmt.Errorf("vm: template memory: %w", err)
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("wren-clone-ram", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("vm: memfd: %w", err)
	}
	mem := os.NewFile(uintptr(fd), "wren-clone-ram")
	d, err := digestMemory(src, mem)
	if err != nil {
		mem.Close()
		return nil, nil, fmt.Errorf("vm: template memory: %w", err)
	}
	if d.SHA256 != m.Mem.SHA256 || d.Size != m.Mem.Size {
		mem.Close()
		return nil, nil, fmt.Errorf("vm: template %s: the memory file changed since the template was saved (SHA-256 %s, saved %s)",
			tdir, d.SHA256[:12], m.Mem.SHA256[:12])
	}
	return mem, &CloneStats{CopyBytes: d.Pages * memPage}, nil
}

// restoreClone starts QEMU on the clone's memory, loads the template's
// state, hot-plugs the clone's devices and waits for the agent.
func (v *VM) restoreClone(ctx context.Context, cfg *Config, m *Manifest, mem *os.File) error {
	// QEMU opens the memfd through this process's fd table.
	memPath := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), mem.Fd())
	args, err := templateArgs(cfg, m.Accel, memPath, m.Cmdline)
	if err != nil {
		return err
	}
	cfg.progress("vm: starting QEMU as a clone of %s", v.Template)
	os.Remove(v.Console)
	os.Remove(filepath.Join(cfg.Dir, agentLogFile))
	if err := v.runQEMU(cfg, append(args, "-incoming", "defer"), cfg.Detach); err != nil {
		return err
	}
	q, err := v.waitQMP(ctx)
	if err != nil {
		return err
	}
	defer q.Close()
	if err := setIgnoreShared(ctx, q); err != nil {
		return err
	}
	state := filepath.Join(v.Template, templateState)
	if err := q.Execute(ctx, "migrate-incoming", map[string]any{"uri": "exec:cat " + shellQuote(state)}, nil); err != nil {
		return err
	}
	if err := waitMigration(ctx, q); err != nil {
		return fmt.Errorf("restore: %w\n%s", err, v.diagnostics())
	}
	var st struct {
		Running bool `json:"running"`
	}
	if err := q.Execute(ctx, "query-status", nil, &st); err != nil {
		return err
	}
	if !st.Running {
		if err := q.Execute(ctx, "cont", nil, nil); err != nil {
			return err
		}
	}
	// The share first: by the time the agent answers through the vsock
	// device plugged after it, the guest has usually probed both.
	for _, d := range []vhostDev{vhostFS(v.Dir), vhostVsock(v.Dir)} {
		if err := hotplugVhostUser(ctx, q, d); err != nil {
			return err
		}
	}
	if err := v.startLogCollector(ctx, cfg); err != nil {
		return err
	}
	if err := v.waitBoot(ctx, cfg); err != nil {
		return err
	}
	if err := waitDriverOK(ctx, q, vhostFS(v.Dir)); err != nil {
		return err
	}
	return v.Refresh(ctx)
}

// Refresh tells a restored guest what it cannot know by itself: the time
// (its clock stopped when the template was saved) and fresh host entropy
// for its random pool (Kata's SetGuestDateTime and ReseedRandomDev after a
// template clone).
func (v *VM) Refresh(ctx context.Context) error {
	c, err := client.Dial(ctx, v.Addr())
	if err != nil {
		return err
	}
	defer c.Close()
	seed := make([]byte, 512)
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	if _, err := c.Agent.ReseedRandomDev(ctx, &agentpb.ReseedRandomDevRequest{Data: seed}); err != nil {
		return fmt.Errorf("clone: reseed the guest's random pool: %w", err)
	}
	now := time.Now()
	if _, err := c.Agent.SetGuestDateTime(ctx, &agentpb.SetGuestDateTimeRequest{Sec: now.Unix(), Usec: int64(now.Nanosecond() / 1000)}); err != nil {
		return fmt.Errorf("clone: set the guest's clock: %w", err)
	}
	return nil
}
