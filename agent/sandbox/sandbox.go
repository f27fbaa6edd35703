// Package sandbox is the pod model behind the agent API: one sandbox per
// agent, created by CreateSandbox (hostname in a persistent UTS namespace, a
// persistent IPC namespace, DNS, sandbox storages) and the containers and
// processes that live in it. Its methods take and return the agentpb
// messages and report errors as ttrpc status codes.
//
// Locking: Sandbox.mu only guards the maps and fields; it is never held
// across a mount, a cgroup access, a process start or a wait. Each
// container serialises its own lifecycle changes (package container).
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/agent/container"
	"github.com/wren-vm/wren/agent/device"
	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/kmodload"
	"github.com/wren-vm/wren/agent/passfd"
	"github.com/wren-vm/wren/agent/reaper"
	"github.com/wren-vm/wren/agent/storage"
	"github.com/wren-vm/wren/lib/fsremove"
	"github.com/wren-vm/wren/lib/kmod"
)

// Defaults match the Kata agent's guest paths.
const (
	DefaultStateRoot    = "/run/kata-containers"
	DefaultNamespaceDir = "/run/sandbox-ns"
	// oomQueue is how many OOM events wait for a GetOOMEvent caller.
	oomQueue = 100
)

// StorageMounter mounts the storages of CreateSandbox (owner "") and
// CreateContainer (owner = container id). The storage layer implements it.
type StorageMounter interface {
	// MountVolumes mounts the storages for owner; on error nothing of this
	// call stays mounted.
	MountVolumes(ctx context.Context, owner string, vols []storage.Volume) error
	// Release unmounts what Mount mounted for owner (reference counted).
	Release(ctx context.Context, owner string) error
	// Rollback undoes Mount for a request that failed afterwards: like
	// Release, and shared storages that request mounted go too.
	Rollback(ctx context.Context, owner string) error
	// ReleaseAll unmounts everything.
	ReleaseAll(ctx context.Context) error
}

// DeviceHandler makes the devices of CreateContainer available and rewrites
// the spec to point at them. The device layer implements it.
type DeviceHandler interface {
	Apply(ctx context.Context, devices []device.Device, spec *specs.Spec) error
}

// Options configure a Sandbox.
type Options struct {
	// StateRoot holds bundles (<StateRoot>/<cid>), the sandbox's DNS file
	// (<StateRoot>/sandbox/resolv.conf) and libcontainer state. Default
	// DefaultStateRoot.
	StateRoot string
	// NamespaceDir holds the persistent uts and ipc namespace files.
	// Default DefaultNamespaceDir, or <StateRoot>/sandbox-ns when StateRoot
	// is not the default.
	NamespaceDir string
	// PipeSize is agent.container_pipe_size (0: kernel default).
	PipeSize int
	// CgroupParent holds every container's cgroup: a container whose spec
	// has no cgroupsPath gets /<CgroupParent>/<cid>, one whose spec names
	// a path outside it /<CgroupParent>/<path>. Default "wren".
	CgroupParent string
	// PidsMax is the sandbox's pids ceiling, set at CreateSandbox as the
	// pids.max of CgroupParent (see pids.go); 0 derives it from the
	// guest's limits (DerivePidsMax).
	PidsMax int64
	// ModulesDir is the kernel module tree CreateSandbox's kernel_modules
	// load from; "" is the running kernel's /lib/modules/<release>.
	ModulesDir string
	// NoPivotRoot forces no_pivot_root; it is also used when / is an
	// initramfs.
	NoPivotRoot bool
	Reaper      *reaper.Reaper
	// Storage mounts storages; nil refuses requests that carry storages.
	Storage StorageMounter
	// Devices handles devices; nil refuses requests that carry devices.
	Devices DeviceHandler
	// Passfd holds the host connections of passfd IO; nil ignores the
	// stream ports of requests, as Kata's agent does without a listener.
	Passfd *passfd.Streams
	Log    *slog.Logger
}

// Sandbox is the agent's single pod.
type Sandbox struct {
	opts        Options
	log         *slog.Logger
	noPivotRoot bool

	mu         sync.Mutex
	created    bool
	busy       bool // a CreateSandbox or DestroySandbox is in progress
	id         string
	hostname   string
	ns         *namespaces
	dnsFile    string
	containers map[string]*entry
	guestHooks *specs.Hooks // from guest_hook_path, added to every container
	pidnsPath  string       // the sandbox PID namespace: the first container's
	pidnsOwner string
	// containerPids is the pids limit of containers whose spec sets none.
	containerPids int64
	oom           chan string
	destroyed     chan struct{} // closed by DestroySandbox; unblocks GetOOMEvent
}

// entry is a container slot; c is nil while CreateContainer runs.
type entry struct {
	c          *container.Container
	spec       *specs.Spec // as created (after the agent's rewrites)
	bundle     string
	rootfs     string
	hasStorage bool
}

// New returns a sandbox that does not exist yet (CreateSandbox creates it).
func New(opts Options) (*Sandbox, error) {
	if opts.Reaper == nil {
		return nil, errors.New("sandbox: a reaper is required")
	}
	if opts.StateRoot == "" {
		opts.StateRoot = DefaultStateRoot
	}
	if opts.NamespaceDir == "" {
		// A state root other than the guest's (an agent on a host, tests)
		// keeps its namespaces to itself.
		opts.NamespaceDir = DefaultNamespaceDir
		if filepath.Clean(opts.StateRoot) != DefaultStateRoot {
			opts.NamespaceDir = filepath.Join(opts.StateRoot, "sandbox-ns")
		}
	}
	if opts.CgroupParent == "" {
		opts.CgroupParent = "wren"
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	return &Sandbox{
		opts:        opts,
		log:         log.With("component", "sandbox"),
		noPivotRoot: opts.NoPivotRoot || container.RootIsInitramfs(),
		containers:  make(map[string]*entry),
		oom:         make(chan string, oomQueue),
		destroyed:   make(chan struct{}),
	}, nil
}

var idPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// reservedIDs name directories of the state root that are not bundles.
var reservedIDs = map[string]bool{"sandbox": true, "shared": true, "sandbox-ns": true}

func validateID(kind, id string) error {
	if kind == "exec" {
		// Exec ids are only keys (containerd makes them up freely).
		if id == "" || len(id) > 1024 {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "invalid exec id %q", id)
		}
		return nil
	}
	if !idPattern.MatchString(id) || len(id) > 1024 {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "invalid %s id %q: must match %s", kind, id, idPattern)
	}
	if kind == "container" && reservedIDs[id] {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "invalid container id %q: reserved", id)
	}
	return nil
}

// Created reports whether CreateSandbox has run (and DestroySandbox not).
func (s *Sandbox) Created() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created
}

// Destroyed is closed when DestroySandbox completes (the agent, as PID 1,
// then powers the VM off).
func (s *Sandbox) Destroyed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.destroyed
}

func (s *Sandbox) requireCreated() error {
	if !s.created {
		return errdefs.New(errdefs.ErrFailedPrecondition, "sandbox not created: call CreateSandbox first")
	}
	return nil
}

// Config is a CreateSandbox request in the agent's terms.
type Config struct {
	// ID names the sandbox (may be empty).
	ID       string
	Hostname string
	// DNS holds the lines of the sandbox's resolv.conf.
	DNS           []string
	KernelModules []KernelModule
	Storages      []storage.Volume
	// GuestHookPath, when set, is a guest directory whose prestart,
	// poststart and poststop subdirectories hold OCI hooks for every
	// container.
	GuestHookPath string
}

// KernelModule is a module to load when the sandbox is created.
type KernelModule struct {
	Name       string
	Parameters []string
}

// CreateSandbox sets the sandbox up. A second call gives AlreadyExists.
func (s *Sandbox) CreateSandbox(ctx context.Context, cfg Config) (retErr error) {
	if err := s.claimCreate(); err != nil {
		return err
	}
	defer s.releaseCreate()

	if cfg.ID != "" {
		if err := validateID("sandbox", cfg.ID); err != nil {
			return err
		}
	}
	if len(cfg.Storages) > 0 && s.opts.Storage == nil {
		return errdefs.New(errdefs.ErrUnimplemented, "no storage layer configured")
	}
	var undo []func()
	defer func() {
		if retErr != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	ceiling, err := s.setPidsCeiling()
	if err != nil {
		return err
	}

	sandboxDir := filepath.Join(s.opts.StateRoot, "sandbox")
	if err := os.MkdirAll(sandboxDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %v", sandboxDir, err)
	}
	undo = append(undo, func() { s.warnUndo("remove "+sandboxDir, fsremove.All(sandboxDir)) })

	// Runs after ns.release (undo goes in reverse): a failed create
	// leaves no namespace directory either.
	undo = append(undo, func() { s.warnUndo("remove "+s.opts.NamespaceDir, removeIfEmpty(s.opts.NamespaceDir)) })
	ns, err := newNamespaces(s.opts.NamespaceDir, cfg.Hostname)
	if err != nil {
		return fmt.Errorf("sandbox namespaces: %v", err)
	}
	undo = append(undo, func() { s.warnUndo("release namespaces", ns.release()) })

	dnsFile, err := writeResolvConf(sandboxDir, cfg.DNS)
	if err != nil {
		return err
	}
	for _, m := range cfg.KernelModules {
		if err := s.loadModule(m); err != nil {
			return fmt.Errorf("load kernel module %s: %w", m.Name, err)
		}
	}
	if len(cfg.Storages) > 0 {
		if err := s.opts.Storage.MountVolumes(ctx, "", cfg.Storages); err != nil {
			return fmt.Errorf("sandbox storages: %w", err)
		}
		undo = append(undo, func() { _ = s.opts.Storage.Rollback(context.Background(), "") })
	}

	// After the storages: a hook directory may live on one of them. A path
	// that holds no hooks is logged, as Kata's agent does, not refused.
	var hooks *specs.Hooks
	if cfg.GuestHookPath != "" {
		if hooks, err = findGuestHooks(cfg.GuestHookPath); err != nil {
			s.log.Warn("no guest hooks", "guest_hook_path", cfg.GuestHookPath, "err", err)
		}
	}
	s.markCreated(cfg, ns, dnsFile, hooks, ceiling)
	return nil
}

// warnUndo logs a failed step of a failed create's undo: the create's own
// error is the one returned, and the rest of the undo still runs.
func (s *Sandbox) warnUndo(step string, err error) {
	if err != nil {
		s.log.Warn("undo after failed create", "step", step, "err", err)
	}
}

// claimCreate marks a CreateSandbox in progress, refusing a second one or
// one after the sandbox was created; releaseCreate ends it.
func (s *Sandbox) claimCreate() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.created || s.busy {
		return errdefs.New(errdefs.ErrAlreadyExists, "sandbox already created")
	}
	s.busy = true
	return nil
}

func (s *Sandbox) releaseCreate() {
	s.mu.Lock()
	s.busy = false
	s.mu.Unlock()
}

// setPidsCeiling sets the sandbox's pids ceiling (the configured one or
// this kernel's) on the cgroup parent and returns it. The parent outlives
// the sandbox, as the cgroups libcontainer makes above a container do;
// nothing to undo.
func (s *Sandbox) setPidsCeiling() (int64, error) {
	ceiling := s.opts.PidsMax
	if ceiling == 0 {
		var err error
		if ceiling, err = guestPidsMax(); err != nil {
			return 0, fmt.Errorf("sandbox pids ceiling: %v", err)
		}
	}
	if err := setParentPidsMax(s.opts.CgroupParent, ceiling); err != nil {
		return 0, fmt.Errorf("sandbox pids ceiling %d on cgroup %s: %v", ceiling, s.opts.CgroupParent, err)
	}
	return ceiling, nil
}

// writeResolvConf writes the sandbox's resolv.conf into sandboxDir and
// returns its path, or "" when the request has no DNS lines.
func writeResolvConf(sandboxDir string, dns []string) (string, error) {
	if len(dns) == 0 {
		return "", nil
	}
	dnsFile := filepath.Join(sandboxDir, "resolv.conf")
	content := strings.Join(dns, "\n") + "\n"
	if err := os.WriteFile(dnsFile, []byte(content), 0o644); err != nil {
		return "", fmt.Errorf("write %s: %v", dnsFile, err)
	}
	return dnsFile, nil
}

// markCreated records what CreateSandbox set up: from now on the sandbox
// takes containers.
func (s *Sandbox) markCreated(cfg Config, ns *namespaces, dnsFile string, hooks *specs.Hooks, ceiling int64) {
	s.mu.Lock()
	s.created = true
	s.id = cfg.ID
	s.hostname = cfg.Hostname
	s.ns = ns
	s.dnsFile = dnsFile
	s.guestHooks = hooks
	s.containerPids = containerPidsMax(ceiling)
	s.oom = make(chan string, oomQueue)
	s.destroyed = make(chan struct{})
	s.mu.Unlock()
	s.log.Info("sandbox created", "id", s.id, "hostname", s.hostname,
		"cgroup_parent", s.opts.CgroupParent, "pids_max", ceiling, "container_pids_max", s.containerPids)
}

// loadModule loads a CreateSandbox kernel module, with its dependencies,
// from the guest's module tree through the agent's own loader: the guest
// has no modprobe. A name that is not a module there is NotFound.
func (s *Sandbox) loadModule(m KernelModule) error {
	err := kmodload.LoadByName(s.opts.ModulesDir, m.Name, m.Parameters)
	switch {
	case errors.Is(err, kmodload.ErrInvalidName):
		return errdefs.Mark(errdefs.ErrInvalidArgument, err)
	case errors.Is(err, kmod.ErrNotFound):
		return errdefs.Mark(errdefs.ErrNotFound, err)
	}
	return err
}

// DestroySandbox kills every container, unmounts everything the sandbox
// mounted, removes its state and unblocks GetOOMEvent.
func (s *Sandbox) DestroySandbox(ctx context.Context) error {
	s.mu.Lock()
	if err := s.requireCreated(); err != nil {
		s.mu.Unlock()
		return err
	}
	if s.busy {
		s.mu.Unlock()
		return errdefs.New(errdefs.ErrFailedPrecondition, "sandbox is being created or destroyed")
	}
	s.busy = true
	ids := make([]string, 0, len(s.containers))
	for id, e := range s.containers {
		if e.c != nil {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.busy = false
		s.mu.Unlock()
	}()

	var errs []error
	for _, id := range ids {
		if err := s.removeContainer(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", id, err))
		}
	}
	storageErr := false
	if s.opts.Storage != nil {
		if err := s.opts.Storage.ReleaseAll(ctx); err != nil {
			errs = append(errs, fmt.Errorf("storages: %w", err))
			storageErr = true
		}
	}
	s.mu.Lock()
	ns := s.ns
	s.mu.Unlock()
	if ns != nil {
		if err := ns.release(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeIfEmpty(s.opts.NamespaceDir); err != nil {
		errs = append(errs, err)
	}
	s.removeCgroupParent()
	// Only once nothing of the storage layer may still be mounted below
	// it: RemoveAll would descend into a live mount.
	if !storageErr {
		if err := fsremove.All(filepath.Join(s.opts.StateRoot, "sandbox")); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeIfEmpty(filepath.Join(s.opts.StateRoot, libcontainerDir)); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("destroy sandbox: %v", errors.Join(errs...))
	}
	s.mu.Lock()
	s.created = false
	s.ns = nil
	s.dnsFile = ""
	s.guestHooks = nil
	s.pidnsPath, s.pidnsOwner = "", ""
	close(s.destroyed)
	s.mu.Unlock()
	s.log.Info("sandbox destroyed", "id", s.id)
	return nil
}

func removeIfEmpty(dir string) error {
	err := os.Remove(dir)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if errors.Is(err, errNotEmpty) {
		return nil
	}
	return err
}

// GetOOMEvent blocks until a container hits OOM, ctx ends or the sandbox
// is destroyed, and returns the container's id.
func (s *Sandbox) GetOOMEvent(ctx context.Context) (string, error) {
	s.mu.Lock()
	if err := s.requireCreated(); err != nil {
		s.mu.Unlock()
		return "", err
	}
	oom, destroyed := s.oom, s.destroyed
	s.mu.Unlock()
	select {
	case id := <-oom:
		return id, nil
	case <-destroyed:
		return "", errdefs.New(errdefs.ErrAborted, "sandbox destroyed")
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (s *Sandbox) notifyOOM(oom chan string) func(string) {
	return func(id string) {
		select {
		case oom <- id:
		default:
			s.log.Warn("OOM event queue full; dropping event", "container", id)
		}
	}
}
