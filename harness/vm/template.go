package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Files of a template directory (see docs/templates.md).
const (
	// TemplateManifest describes the template; it is written last, so a
	// directory without it holds no usable template.
	TemplateManifest = "template.json"
	// templateMem is the guest RAM, a memory-backend-file mapped shared:
	// migration with x-ignore-shared leaves it out of the state file.
	templateMem = "mem"
	// templateState is QEMU's migration stream of everything but RAM.
	templateState = "state.mig"
	// templateFormat is bumped when the layout or the machine changes.
	templateFormat = 1
)

// Root ports that a template machine has beyond the HotplugPorts ones: a
// clone hot-plugs its vhost-user devices there, because QEMU 7.2 refuses
// to migrate a VM that has them (so the template is saved without them)
// and q35's root bus cannot take hot-plugged devices.
const (
	vsockPortID = "hp-vsock"
	fsPortID    = "hp-fs"
)

// FileID names a file a template depends on: its path, size, mtime and
// SHA-256 at the time the template was made.
type FileID struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	MtimeNS int64  `json:"mtime_ns"`
	SHA256  string `json:"sha256"`
}

// Manifest is TemplateManifest: what a clone must match and check.
type Manifest struct {
	Format int `json:"format"`
	// Dir is where the template was made (its QEMU command line names
	// it); the directory may move since.
	Dir         string    `json:"dir"`
	Created     time.Time `json:"created"`
	QEMUVersion string    `json:"qemu_version"`
	Accel       string    `json:"accel"`
	Kernel      FileID    `json:"kernel"`
	Initrd      FileID    `json:"initrd"`
	Image       *FileID   `json:"image,omitempty"`
	Firmware    string    `json:"firmware,omitempty"`
	MemoryMiB   int       `json:"memory_mib"`
	CPUs        int       `json:"cpus"`
	GuestCID    uint32    `json:"template_guest_cid"`
	Cmdline     string    `json:"cmdline"`
	// Args is the template's QEMU command line; a clone's is the same
	// with its own paths and -incoming defer.
	Args  []string  `json:"qemu_args"`
	Mem   MemDigest `json:"mem"`
	State FileID    `json:"state"`
	// BootMS is QEMU start to the agent's first answer; SaveMS the
	// migration to the state file.
	BootMS float64 `json:"boot_ms"`
	SaveMS float64 `json:"save_ms"`
}

// identify records path's size, mtime and SHA-256.
func identify(path string) (FileID, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return FileID{}, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return FileID{}, err
	}
	sum, err := fileSHA256(abs)
	if err != nil {
		return FileID{}, err
	}
	return FileID{Path: abs, Size: st.Size(), MtimeNS: st.ModTime().UnixNano(), SHA256: sum}, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// matches reports whether the file at path is the one id names: the same
// size and mtime is taken as the same file (a rewrite changes the mtime);
// otherwise (a copy, a touch) the content decides.
func (id FileID) matches(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() == id.Size && st.ModTime().UnixNano() == id.MtimeNS {
		return nil
	}
	if st.Size() != id.Size {
		return fmt.Errorf("%s is %d bytes, the template's was %d", path, st.Size(), id.Size)
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return err
	}
	if sum != id.SHA256 {
		return fmt.Errorf("%s has SHA-256 %s, the template's had %s", path, sum[:12], id.SHA256[:12])
	}
	return nil
}

// qemuVersion is the first line of `qemu --version`: a template's state
// file loads only into the QEMU that wrote it (or one that promises to read
// it, which this does not try to judge).
func qemuVersion(ctx context.Context, qemu string) (string, error) {
	out, err := exec.CommandContext(ctx, qemu, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", qemu, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line), nil
}

// templateArgs is the QEMU command line of a template or clone machine:
// the pod VM's (qemuArgs) without its vhost-user devices, with guest RAM
// in a shared memory-backend-file at memPath, the kernel command line the
// template booted with, two more root ports for the vhost-user devices a
// clone hot-plugs, and a VM generation ID device (guid=auto: every QEMU
// process, so every clone, gets its own, and Linux reseeds its RNG when the
// ID changes under it).
func templateArgs(cfg *Config, accel, memPath, cmdline string) ([]string, error) {
	base := qemuArgs(cfg, accel)
	mem := fmt.Sprintf("%dM", cfg.MemoryMiB)
	var args []string
	replaced := 0
	for i := 0; i < len(base); i++ {
		a := base[i]
		if i+1 >= len(base) {
			args = append(args, a)
			continue
		}
		val := base[i+1]
		switch {
		case (a == "-chardev" && (strings.HasPrefix(val, "socket,id=vsock,") || strings.HasPrefix(val, "socket,id=virtiofs,"))) ||
			(a == "-device" && strings.HasPrefix(val, "vhost-user-")):
			i++ // added by hot-plug in a clone
		case a == "-object" && strings.HasPrefix(val, "memory-backend-memfd,id=ram,"):
			args = append(args, a, "memory-backend-file,id=ram,size="+mem+",mem-path="+memPath+",share=on")
			replaced++
			i++
		case a == "-append":
			args = append(args, a, cmdline)
			i++
		default:
			args = append(args, a)
		}
	}
	if replaced != 1 {
		return nil, errors.New("vm: template: the pod VM's command line has no memory-backend-memfd id=ram to replace")
	}
	for i, id := range []string{vsockPortID, fsPortID} {
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=%s,bus=pcie.0,chassis=%d,addr=0x%x",
			id, HotplugPorts+1+i, hotplugSlot0+HotplugPorts+i))
	}
	return append(args, "-device", "vmgenid,guid=auto"), nil
}

// CreateTemplate boots a pod VM from cfg's kernel and initramfs in the
// template directory cfg.Dir, waits for the agent (through a vsock device
// hot-plugged for the purpose and unplugged again), and saves it: QEMU
// migrates to a state file with x-ignore-shared, the RAM stays in the
// template's memory file. The manifest, written last, records what a clone
// must match.
func CreateTemplate(ctx context.Context, cfg Config) (_ *Manifest, err error) {
	// The template always offers the log port (a clone's log collector
	// connects to it) and is never left running.
	cfg.NoLogPort, cfg.Detach, cfg.LogCollector = false, false, nil
	cfg.SharedDir = ""
	// qboot hangs before the kernel with a vmgenid device (measured with
	// QEMU 7.2): templates boot SeaBIOS, which only the template pays for.
	cfg.Firmware = "seabios"
	if cfg.RootImage != "" {
		return nil, errors.New("vm: a template boots from an initramfs; a DAX root image is not supported for templates")
	}
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if cfg.Image != "" {
		if cfg.Image, err = filepath.Abs(cfg.Image); err != nil {
			return nil, err
		}
	}
	accel, err := chooseAccel(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	cfg.Accel = accel
	m, err := newManifest(ctx, &cfg, accel)
	if err != nil {
		return nil, err
	}
	v := newVM(&cfg)
	v.Accel = accel
	if err := v.prepareStateDir(&cfg); err != nil {
		return nil, err
	}
	// A template being made is never one: the manifest goes first.
	for _, f := range []string{TemplateManifest, templateMem, templateState} {
		if err := os.Remove(filepath.Join(cfg.Dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("template: %w", err)
		}
	}
	defer func() {
		// The template's QEMU is done with after the save, or on failure.
		if serr := v.Stop(); serr != nil && err == nil {
			err = fmt.Errorf("template: stop the template VM: %w", serr)
		}
	}()
	if err := v.bootTemplate(ctx, &cfg, m); err != nil {
		return nil, err
	}
	if err := v.saveTemplate(ctx, &cfg, m); err != nil {
		return nil, err
	}
	if err := v.Stop(); err != nil {
		return nil, fmt.Errorf("template: stop the template VM: %w", err)
	}
	if err := m.seal(ctx, cfg.Dir); err != nil {
		return nil, err
	}
	return m, nil
}

// newManifest records the boot files, QEMU and machine of a template.
func newManifest(ctx context.Context, cfg *Config, accel string) (*Manifest, error) {
	m := &Manifest{Format: templateFormat, Dir: cfg.Dir, Accel: accel, Firmware: cfg.Firmware,
		MemoryMiB: cfg.MemoryMiB, CPUs: cfg.CPUs, GuestCID: cfg.GuestCID, Cmdline: KernelCmdline(cfg)}
	var err error
	if m.QEMUVersion, err = qemuVersion(ctx, cfg.QEMU); err != nil {
		return nil, err
	}
	if m.Kernel, err = identify(cfg.Kernel); err != nil {
		return nil, fmt.Errorf("template: kernel: %w", err)
	}
	if m.Initrd, err = identify(cfg.Initrd); err != nil {
		return nil, fmt.Errorf("template: initramfs: %w", err)
	}
	if cfg.Image != "" {
		id, err := identify(cfg.Image)
		if err != nil {
			return nil, fmt.Errorf("template: DAX image: %w", err)
		}
		m.Image = &id
	}
	// The clone boots from the files the manifest names.
	cfg.Kernel, cfg.Initrd = m.Kernel.Path, m.Initrd.Path
	if m.Args, err = templateArgs(cfg, accel, filepath.Join(cfg.Dir, templateMem), m.Cmdline); err != nil {
		return nil, err
	}
	return m, nil
}

// bootTemplate starts the template's QEMU and waits for its agent through
// a vsock device that is hot-plugged for the wait and unplugged again:
// the agent's listener stays bound without a device, and the clone plugs
// in its own.
func (v *VM) bootTemplate(ctx context.Context, cfg *Config, m *Manifest) error {
	if err := v.startBackends(ctx, cfg); err != nil {
		return err
	}
	cfg.progress("vm: starting the template's QEMU (%s, %d MiB)", m.Accel, cfg.MemoryMiB)
	if err := v.runQEMU(cfg, m.Args, false); err != nil {
		return err
	}
	q, err := v.waitQMP(ctx)
	if err != nil {
		return err
	}
	defer q.Close()
	if err := hotplugVhostUser(ctx, q, vhostVsock(v.Dir)); err != nil {
		return err
	}
	if err := v.waitBoot(ctx, cfg); err != nil {
		return err
	}
	m.BootMS = v.BootMS
	cfg.progress("vm: unplugging the template's vsock device")
	return unplugVhostUser(ctx, q, vhostVsock(v.Dir))
}

// saveTemplate migrates the stopped template into its state file.
func (v *VM) saveTemplate(ctx context.Context, cfg *Config, m *Manifest) error {
	q, err := v.QMPDial(ctx)
	if err != nil {
		return err
	}
	defer q.Close()
	start := time.Now()
	if err := setIgnoreShared(ctx, q); err != nil {
		return err
	}
	if err := q.Execute(ctx, "stop", nil, nil); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	state := filepath.Join(cfg.Dir, templateState)
	if err := q.Execute(ctx, "migrate", map[string]any{"uri": "exec:cat > " + shellQuote(state)}, nil); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	if err := waitMigration(ctx, q); err != nil {
		return fmt.Errorf("template: save: %w", err)
	}
	m.SaveMS = float64(time.Since(start).Microseconds()) / 1000
	cfg.progress("vm: template saved in %v", time.Since(start).Round(time.Millisecond))
	return nil
}

// seal hashes the memory and state files and writes the manifest.
func (m *Manifest) seal(ctx context.Context, dir string) error {
	f, err := os.Open(filepath.Join(dir, templateMem))
	if err != nil {
		return fmt.Errorf("template: %w", err)
	}
	defer f.Close()
	d, err := digestMemory(f, nil)
	if err != nil {
		return fmt.Errorf("template: memory file: %w", err)
	}
	m.Mem = *d
	if m.State, err = identify(filepath.Join(dir, templateState)); err != nil {
		return fmt.Errorf("template: state file: %w", err)
	}
	m.Created = time.Now().UTC()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, TemplateManifest+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, TemplateManifest))
}

// LoadTemplate reads a template directory's manifest and checks that its
// files are there and that the state file is the one saved.
func LoadTemplate(dir string) (*Manifest, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, TemplateManifest))
	if err != nil {
		return nil, fmt.Errorf("vm: no template in %s (wrenctl vm template create --dir %s): %w", dir, dir, err)
	}
	m := &Manifest{}
	if err := json.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("vm: template %s: corrupt manifest: %w", dir, err)
	}
	if m.Format != templateFormat {
		return nil, fmt.Errorf("vm: template %s: format %d, this wren reads %d: create it again", dir, m.Format, templateFormat)
	}
	st, err := os.Stat(filepath.Join(dir, templateMem))
	if err != nil {
		return nil, fmt.Errorf("vm: template %s: memory file: %w", dir, err)
	}
	if st.Size() != m.Mem.Size {
		return nil, fmt.Errorf("vm: template %s: memory file is %d bytes, was %d when saved", dir, st.Size(), m.Mem.Size)
	}
	sum, err := fileSHA256(filepath.Join(dir, templateState))
	if err != nil {
		return nil, fmt.Errorf("vm: template %s: state file: %w", dir, err)
	}
	if sum != m.State.SHA256 {
		return nil, fmt.Errorf("vm: template %s: state file is corrupt (SHA-256 %s, saved %s)", dir, sum[:12], m.State.SHA256[:12])
	}
	return m, nil
}

// shellQuote quotes s for the /bin/sh that runs QEMU's exec: migration URIs.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
