package rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/agent/copyfile"
	"github.com/wren-vm/wren/agent/device"
	"github.com/wren-vm/wren/agent/hotplug"
	"github.com/wren-vm/wren/agent/iptables"
	"github.com/wren-vm/wren/agent/memagent"
	"github.com/wren-vm/wren/agent/metrics"
	"github.com/wren-vm/wren/agent/network"
	"github.com/wren-vm/wren/agent/storage"
	"github.com/wren-vm/wren/agent/version"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// GuestServices are what the storage, device, network and guest handlers
// (guest.go, storage.go, network.go) work with (agent/assemble builds them). Storage and Devices are
// also what CreateContainer, RemoveContainer and DestroySandbox use.
type GuestServices struct {
	Storage  *storage.Manager
	Devices  *device.Devices
	Network  *network.Network
	CopyFile *copyfile.Writer
	Hotplug  *hotplug.System
	Metrics  *metrics.Collector
	// MemAgent is the mem-agent the MemAgent*Set RPCs retune; nil when
	// the guest runs without one (agent.mem_agent_enable unset, or it
	// could not start).
	MemAgent *memagent.Agent

	// TerminationLog returns the guest path of a container's Kubernetes
	// termination message file (the source of its termination-log
	// mount), for GetDiagnosticData. The containers side provides it.
	TerminationLog func(containerID string) (string, error)
	// CPUsOnlined, when set, re-applies container cpusets after
	// OnlineCPUMem brought CPUs online, as Kata does.
	CPUsOnlined func(ctx context.Context) error
}

func notConfigured(what string) error {
	return status.Errorf(codes.FailedPrecondition, "%s is not set up in this agent", what)
}

// CopyFile writes a file, directory or symlink below the shared directory.
func (a *Agent) CopyFile(ctx context.Context, req *agentpb.CopyFileRequest) (*emptypb.Empty, error) {
	if a.guest.CopyFile == nil {
		return nil, notConfigured("CopyFile")
	}
	err := a.guest.CopyFile.Copy(copyfile.Request{
		Path: req.Path, FileSize: req.FileSize, FileMode: req.FileMode, DirMode: req.DirMode,
		UID: req.Uid, GID: req.Gid, Offset: req.Offset, Data: req.Data,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// seccompSupported reports whether containers can get seccomp filters: the
// agent must be built with libseccomp (the seccomp build tag) and the
// kernel must offer seccomp.
func seccompSupported() bool {
	if !seccomp.Enabled {
		return false
	}
	b, err := os.ReadFile("/proc/self/status")
	return err == nil && bytes.Contains(b, []byte("\nSeccomp:"))
}

// GetGuestDetails reports the memory hotplug geometry and the agent's
// capabilities.
func (a *Agent) GetGuestDetails(ctx context.Context, req *agentpb.GuestDetailsRequest) (*agentpb.GuestDetailsResponse, error) {
	resp := &agentpb.GuestDetailsResponse{AgentDetails: &agentpb.AgentDetails{
		Version:         version.Version,
		InitDaemon:      os.Getpid() == 1,
		DeviceHandlers:  device.Handlers(),
		StorageHandlers: storage.Drivers(),
		SupportsSeccomp: seccompSupported(),
	}}
	hp := a.guest.Hotplug
	if hp == nil {
		hp = hotplug.New("")
	}
	if req.MemBlockSize {
		// A kernel without memory hotplug has no block size: report 0, as
		// Kata does, rather than fail sandbox creation.
		size, err := hp.MemBlockSize()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, toStatus(err)
		}
		resp.MemBlockSizeBytes = size
	}
	if req.MemHotplugProbe {
		resp.SupportMemHotplugProbe = hp.ProbeSupported()
	}
	return resp, nil
}

// The seconds SetGuestDateTime accepts, minClockSec <= sec < maxClockSec.
const (
	// minClockSec (2000-01-01T00:00:00Z): a host clock earlier than this
	// is an unset or zeroed one (a reset RTC, a request whose field was
	// never filled), never the time; setting it would take the guest's
	// certificates and file times back with it. It also keeps well clear
	// of the kernel's own lower bound, the time since boot.
	minClockSec = 946_684_800
	// maxClockSec is the kernel's TIME_SETTOD_SEC_MAX (KTIME_SEC_MAX less
	// a 30-year uptime margin): settimeofday refuses it and anything
	// later with EINVAL.
	maxClockSec = 8_277_292_036
)

// SetGuestDateTime sets the guest clock (after a VM template clone or a
// resume the guest's clock is stale). Times the guest cannot or must not
// hold are refused before the clock is touched.
func (a *Agent) SetGuestDateTime(ctx context.Context, req *agentpb.SetGuestDateTimeRequest) (*emptypb.Empty, error) {
	if req.Sec < minClockSec || req.Sec >= maxClockSec || req.Usec < 0 || req.Usec >= 1_000_000 {
		return nil, status.Errorf(codes.InvalidArgument, "time %d s %d µs is out of range: want %s to before %s",
			req.Sec, req.Usec, time.Unix(minClockSec, 0).UTC().Format(time.RFC3339), time.Unix(maxClockSec, 0).UTC().Format(time.RFC3339))
	}
	tv := unix.Timeval{Sec: req.Sec, Usec: req.Usec}
	if err := a.setClock(&tv); err != nil {
		return nil, toStatus(fmt.Errorf("settimeofday: %w", err))
	}
	a.log.Info("guest clock set", "time", time.Unix(req.Sec, req.Usec*1000).UTC())
	return &emptypb.Empty{}, nil
}

// maxSeed bounds ReseedRandomDev's data; Kata's runtime sends 512 bytes.
const maxSeed = 64 << 10

// ReseedRandomDev credits the host's random bytes to the guest's entropy
// pool (RNDADDENTROPY) and forces the CRNG to reseed (RNDRESEEDCRNG), so
// VMs cloned from one template do not share a random stream.
func (a *Agent) ReseedRandomDev(ctx context.Context, req *agentpb.ReseedRandomDevRequest) (*emptypb.Empty, error) {
	if len(req.Data) == 0 || len(req.Data) > maxSeed {
		return nil, status.Errorf(codes.InvalidArgument, "seed of %d bytes; want 1 to %d", len(req.Data), maxSeed)
	}
	f, err := os.OpenFile("/dev/random", os.O_WRONLY, 0)
	if err != nil {
		return nil, toStatus(fmt.Errorf("open /dev/random: %w", err))
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(req.Data))
	binary.NativeEndian.PutUint32(info[0:], uint32(len(req.Data)*8))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(req.Data)))
	copy(info[8:], req.Data)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); errno != 0 {
		return nil, toStatus(fmt.Errorf("RNDADDENTROPY: %w", errno))
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); errno != 0 {
		return nil, toStatus(fmt.Errorf("RNDRESEEDCRNG: %w", errno))
	}
	return &emptypb.Empty{}, nil
}

// onlineTimeout bounds an OnlineCPUMem that runs after its reply was sent.
const onlineTimeout = 30 * time.Second

// OnlineCPUMem onlines hot-added memory and CPUs, in the background unless
// the caller waits. Background requests go through a.online: one run at a
// time, later requests merged into the next run.
func (a *Agent) OnlineCPUMem(ctx context.Context, req *agentpb.OnlineCPUMemRequest) (*emptypb.Empty, error) {
	if a.guest.Hotplug == nil {
		return nil, notConfigured("CPU and memory hotplug")
	}
	r := hotplug.Request{CPUs: req.NbCpus, CPUOnly: req.CpuOnly}
	if req.Wait {
		if err := a.onlineCPUMem(ctx, r); err != nil {
			return nil, toStatus(err)
		}
		return &emptypb.Empty{}, nil
	}
	a.online.Schedule(r)
	return &emptypb.Empty{}, nil
}

// onlineCPUMem onlines memory, then CPUs, then lets the containers side
// re-apply cpusets, as Kata does.
func (a *Agent) onlineCPUMem(ctx context.Context, r hotplug.Request) error {
	hp := a.guest.Hotplug
	if hp == nil {
		return notConfigured("CPU and memory hotplug")
	}
	if _, err := hp.Online(ctx, r); err != nil {
		return err
	}
	if r.CPUs > 0 && a.guest.CPUsOnlined != nil {
		return a.guest.CPUsOnlined(ctx)
	}
	return nil
}

// MemHotplugByProbe announces hot-added memory through the probe file.
func (a *Agent) MemHotplugByProbe(ctx context.Context, req *agentpb.MemHotplugByProbeRequest) (*emptypb.Empty, error) {
	if a.guest.Hotplug == nil {
		return nil, notConfigured("memory hotplug")
	}
	if err := a.guest.Hotplug.Probe(req.MemHotplugProbeAddr); err != nil {
		return nil, toStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// GetMetrics returns the Prometheus text exposition.
func (a *Agent) GetMetrics(ctx context.Context, req *agentpb.GetMetricsRequest) (*agentpb.Metrics, error) {
	if a.guest.Metrics == nil {
		return nil, notConfigured("metrics")
	}
	return &agentpb.Metrics{Metrics: a.guest.Metrics.Gather()}, nil
}

// terminationLogMax is Kubernetes' cap on a termination message.
const terminationLogMax = 4096

// GetDiagnosticData returns a container's termination message, which
// cannot reach the host through a shared filesystem when there is none.
func (a *Agent) GetDiagnosticData(ctx context.Context, req *agentpb.GetDiagnosticDataRequest) (*agentpb.GetDiagnosticDataResponse, error) {
	if req.LogType != "termination_log" {
		return nil, status.Errorf(codes.InvalidArgument, "unknown diagnostic log type %q", req.LogType)
	}
	if req.ContainerId == "" {
		return nil, status.Error(codes.InvalidArgument, "container_id is required")
	}
	if a.guest.TerminationLog == nil {
		return nil, notConfigured("termination log lookup")
	}
	path, err := a.guest.TerminationLog(req.ContainerId)
	if err != nil {
		return nil, toStatus(err)
	}
	// The container writes this file: never follow a link it planted.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return &agentpb.GetDiagnosticDataResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(fmt.Errorf("open termination log: %w", err))
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, status.Errorf(codes.FailedPrecondition, "termination log of %s is not a regular file", req.ContainerId)
	}
	b, err := io.ReadAll(io.LimitReader(f, terminationLogMax))
	if err != nil {
		return nil, toStatus(fmt.Errorf("read termination log: %w", err))
	}
	return &agentpb.GetDiagnosticDataResponse{Data: strings.ToValidUTF8(string(b), "\uFFFD")}, nil
}

// GetIPTables returns iptables-save (or ip6tables-save) output.
func (a *Agent) GetIPTables(ctx context.Context, req *agentpb.GetIPTablesRequest) (*agentpb.GetIPTablesResponse, error) {
	out, err := iptables.Save(ctx, req.IsIpv6)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentpb.GetIPTablesResponse{Data: out}, nil
}

// SetIPTables feeds rules to iptables-restore (or ip6tables-restore).
func (a *Agent) SetIPTables(ctx context.Context, req *agentpb.SetIPTablesRequest) (*agentpb.SetIPTablesResponse, error) {
	out, err := iptables.Restore(ctx, req.IsIpv6, req.Data)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentpb.SetIPTablesResponse{Data: out}, nil
}
