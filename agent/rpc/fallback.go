package rpc

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/protocols/agentpb"
	"github.com/wren-vm/wren/protocols/typespb"
)

// fallback answers every AgentService method with Unimplemented. Agent
// embeds it one level down, so a method defined on *Agent always wins and
// a method not written yet is a clear error, never a panic or a hang.
type fallback struct{}

func unimplemented(method string) error {
	return status.Errorf(codes.Unimplemented, "/grpc.AgentService/%s is not implemented by this agent", method)
}

func (fallback) CreateContainer(context.Context, *agentpb.CreateContainerRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("CreateContainer")
}
func (fallback) StartContainer(context.Context, *agentpb.StartContainerRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("StartContainer")
}
func (fallback) RemoveContainer(context.Context, *agentpb.RemoveContainerRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("RemoveContainer")
}
func (fallback) ExecProcess(context.Context, *agentpb.ExecProcessRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("ExecProcess")
}
func (fallback) SignalProcess(context.Context, *agentpb.SignalProcessRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("SignalProcess")
}
func (fallback) WaitProcess(context.Context, *agentpb.WaitProcessRequest) (*agentpb.WaitProcessResponse, error) {
	return nil, unimplemented("WaitProcess")
}
func (fallback) UpdateContainer(context.Context, *agentpb.UpdateContainerRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("UpdateContainer")
}
func (fallback) UpdateEphemeralMounts(context.Context, *agentpb.UpdateEphemeralMountsRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("UpdateEphemeralMounts")
}
func (fallback) StatsContainer(context.Context, *agentpb.StatsContainerRequest) (*agentpb.StatsContainerResponse, error) {
	return nil, unimplemented("StatsContainer")
}
func (fallback) PauseContainer(context.Context, *agentpb.PauseContainerRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("PauseContainer")
}
func (fallback) ResumeContainer(context.Context, *agentpb.ResumeContainerRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("ResumeContainer")
}
func (fallback) RemoveStaleVirtiofsShareMounts(context.Context, *agentpb.RemoveStaleVirtiofsShareMountsRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("RemoveStaleVirtiofsShareMounts")
}
func (fallback) GetDiagnosticData(context.Context, *agentpb.GetDiagnosticDataRequest) (*agentpb.GetDiagnosticDataResponse, error) {
	return nil, unimplemented("GetDiagnosticData")
}
func (fallback) WriteStdin(context.Context, *agentpb.WriteStreamRequest) (*agentpb.WriteStreamResponse, error) {
	return nil, unimplemented("WriteStdin")
}
func (fallback) ReadStdout(context.Context, *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	return nil, unimplemented("ReadStdout")
}
func (fallback) ReadStderr(context.Context, *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	return nil, unimplemented("ReadStderr")
}
func (fallback) CloseStdin(context.Context, *agentpb.CloseStdinRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("CloseStdin")
}
func (fallback) TtyWinResize(context.Context, *agentpb.TtyWinResizeRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("TtyWinResize")
}
func (fallback) UpdateInterface(context.Context, *agentpb.UpdateInterfaceRequest) (*typespb.Interface, error) {
	return nil, unimplemented("UpdateInterface")
}
func (fallback) UpdateRoutes(context.Context, *agentpb.UpdateRoutesRequest) (*agentpb.Routes, error) {
	return nil, unimplemented("UpdateRoutes")
}
func (fallback) ListInterfaces(context.Context, *agentpb.ListInterfacesRequest) (*agentpb.Interfaces, error) {
	return nil, unimplemented("ListInterfaces")
}
func (fallback) ListRoutes(context.Context, *agentpb.ListRoutesRequest) (*agentpb.Routes, error) {
	return nil, unimplemented("ListRoutes")
}
func (fallback) AddARPNeighbors(context.Context, *agentpb.AddARPNeighborsRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("AddARPNeighbors")
}
func (fallback) GetIPTables(context.Context, *agentpb.GetIPTablesRequest) (*agentpb.GetIPTablesResponse, error) {
	return nil, unimplemented("GetIPTables")
}
func (fallback) SetIPTables(context.Context, *agentpb.SetIPTablesRequest) (*agentpb.SetIPTablesResponse, error) {
	return nil, unimplemented("SetIPTables")
}
func (fallback) GetMetrics(context.Context, *agentpb.GetMetricsRequest) (*agentpb.Metrics, error) {
	return nil, unimplemented("GetMetrics")
}
func (fallback) MemAgentMemcgSet(context.Context, *agentpb.MemAgentMemcgConfig) (*emptypb.Empty, error) {
	return nil, unimplemented("MemAgentMemcgSet")
}
func (fallback) MemAgentCompactSet(context.Context, *agentpb.MemAgentCompactConfig) (*emptypb.Empty, error) {
	return nil, unimplemented("MemAgentCompactSet")
}
func (fallback) CreateSandbox(context.Context, *agentpb.CreateSandboxRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("CreateSandbox")
}
func (fallback) DestroySandbox(context.Context, *agentpb.DestroySandboxRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("DestroySandbox")
}
func (fallback) OnlineCPUMem(context.Context, *agentpb.OnlineCPUMemRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("OnlineCPUMem")
}
func (fallback) ReseedRandomDev(context.Context, *agentpb.ReseedRandomDevRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("ReseedRandomDev")
}
func (fallback) GetGuestDetails(context.Context, *agentpb.GuestDetailsRequest) (*agentpb.GuestDetailsResponse, error) {
	return nil, unimplemented("GetGuestDetails")
}
func (fallback) MemHotplugByProbe(context.Context, *agentpb.MemHotplugByProbeRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("MemHotplugByProbe")
}
func (fallback) SetGuestDateTime(context.Context, *agentpb.SetGuestDateTimeRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("SetGuestDateTime")
}
func (fallback) CopyFile(context.Context, *agentpb.CopyFileRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("CopyFile")
}
func (fallback) GetOOMEvent(context.Context, *agentpb.GetOOMEventRequest) (*agentpb.OOMEvent, error) {
	return nil, unimplemented("GetOOMEvent")
}
func (fallback) AddSwap(context.Context, *agentpb.AddSwapRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("AddSwap")
}
func (fallback) AddSwapPath(context.Context, *agentpb.AddSwapPathRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("AddSwapPath")
}
func (fallback) GetVolumeStats(context.Context, *agentpb.VolumeStatsRequest) (*agentpb.VolumeStatsResponse, error) {
	return nil, unimplemented("GetVolumeStats")
}
func (fallback) ResizeVolume(context.Context, *agentpb.ResizeVolumeRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("ResizeVolume")
}
func (fallback) SetPolicy(context.Context, *agentpb.SetPolicyRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("SetPolicy")
}
