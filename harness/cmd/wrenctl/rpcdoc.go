package main

// rpcSummaries are the one-line descriptions `wrenctl list` and `describe`
// print. The compiled descriptors carry no comments, so they live here; a
// test holds this table and the services to the same set of names.
var rpcSummaries = map[string]string{
	// grpc.AgentService: containers and processes.
	"CreateContainer":                "create a container from an OCI spec and its storages (not started yet)",
	"StartContainer":                 "start a created container's init process",
	"RemoveContainer":                "kill a container's processes, wait for them and free what it held",
	"ExecProcess":                    "start another process in a running container",
	"SignalProcess":                  "send a signal to a container's process (or all of them)",
	"WaitProcess":                    "block until a process exits; returns its exit status",
	"UpdateContainer":                "change a container's cgroup resources (CPU, memory, pids, ...)",
	"UpdateEphemeralMounts":          "resize the pod's ephemeral (tmpfs) storages",
	"StatsContainer":                 "a container's cgroup and network statistics",
	"PauseContainer":                 "freeze every process of a container",
	"ResumeContainer":                "thaw a paused container",
	"RemoveStaleVirtiofsShareMounts": "unmount virtio-fs share mounts no container uses any more",
	"GetDiagnosticData":              "diagnostic data of a container, such as its termination log",
	// Process stdio.
	"WriteStdin":   "write bytes to a process's stdin",
	"ReadStdout":   "read the next chunk of a process's stdout (waits for output or EOF)",
	"ReadStderr":   "read the next chunk of a process's stderr (waits for output or EOF)",
	"CloseStdin":   "close a process's stdin (the process reads EOF)",
	"TtyWinResize": "set the window size of a process's terminal",
	// Guest networking.
	"UpdateInterface": "configure a guest network interface (addresses, MTU, name, state)",
	"UpdateRoutes":    "replace the guest's routes",
	"ListInterfaces":  "the guest's network interfaces",
	"ListRoutes":      "the guest's routes",
	"AddARPNeighbors": "add static ARP (neighbour) entries",
	"GetIPTables":     "the guest's iptables (or ip6tables) rules, as iptables-save prints them",
	"SetIPTables":     "load rules into the guest's iptables (or ip6tables) with iptables-restore",
	// Metrics and memory reclaim.
	"GetMetrics":         "Prometheus text exposition of agent and guest metrics",
	"MemAgentMemcgSet":   "tune Kata's PSI-driven memory reclaimer (memcg settings)",
	"MemAgentCompactSet": "tune Kata's memory reclaimer (compaction settings)",
	// Sandbox and guest housekeeping.
	"CreateSandbox":     "set the pod up: hostname, DNS, shared storages, kernel modules",
	"DestroySandbox":    "tear the pod down with every container (an agent that is PID 1 powers the VM off)",
	"OnlineCPUMem":      "bring hot-plugged CPUs and memory online",
	"ReseedRandomDev":   "add entropy to the guest's random pool",
	"GetGuestDetails":   "guest facts: memory block size, memory hotplug probe support, agent details",
	"MemHotplugByProbe": "announce hot-plugged memory through /sys/devices/system/memory/probe",
	"SetGuestDateTime":  "set the guest's clock",
	"CopyFile":          "write a file, directory or symlink into the guest (confined to the pod's state)",
	"GetOOMEvent":       "long poll: answers with the container that next hits its memory limit",
	"AddSwap":           "use a hot-plugged block device as swap",
	"AddSwapPath":       "use a file in the guest as swap",
	"GetVolumeStats":    "usage figures of a volume mounted in the guest",
	"ResizeVolume":      "grow the filesystem of a volume mounted in the guest",
	"SetPolicy":         "replace the agent policy (Rego) if the current one allows it: SetPolicy FILE (make agent-policy)",
	// grpc.Health.
	"Check":   "health check: SERVING once the agent serves",
	"Version": "the agent's version and the agent API version",
}
