package kata

import (
	_ "embed"
	"encoding/json"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/agent/policy/kataref"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// The Kubernetes pod that PodContainerRequest's containers belong to, as
// the annotations of Kata's runtime name it, and which the policy data of
// GenpolicyPolicy describes.
const (
	PodSandboxName      = "policy-pod"
	PodSandboxNamespace = "default"
	// PodSandboxID is a CRI sandbox id: 64 hex digits.
	PodSandboxID = "8667fea11fc4fc70d427cc3645950ac83cc7d33ca515a8774ab95043f0096bb8"
	// PodContainerName is the container's name in the pod.
	PodContainerName = "busybox"
	// bundlePrefix is where containerd keeps the bundles of the k8s.io
	// namespace; genpolicy's rules take the bundle id from it.
	bundlePrefix = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/"
)

// PodContainerArgs is the command line GenpolicyPolicy allows.
var PodContainerArgs = []string{"sh", "-c", "echo allowed by policy >/ran"}

// PodContainerRequest is the CreateContainer request Kata's runtime sends
// for container cid of a Kubernetes pod, whose bundle id (the directory
// holding the root filesystem, spec.Root.Path = <cpath>/<bundle id>/rootfs)
// is bundleID and whose spec is spec: the CRI and Kata annotations
// genpolicy's rules correlate, the spec shaped by ShapeSpec, and no device
// cgroup rules (Kata's constrainGRPCSpec drops them: the agent applies
// its own).
func PodContainerRequest(cid, bundleID string, spec *specs.Spec) *agentpb.CreateContainerRequest {
	spec.Hostname = ""
	spec.Annotations = map[string]string{
		"io.katacontainers.pkg.oci.bundle_path":    bundlePrefix + bundleID,
		"io.katacontainers.pkg.oci.container_type": "pod_container",
		"io.kubernetes.cri.container-name":         PodContainerName,
		"io.kubernetes.cri.container-type":         "container",
		"io.kubernetes.cri.image-name":             "docker.io/library/busybox:latest",
		"io.kubernetes.cri.sandbox-id":             PodSandboxID,
		"io.kubernetes.cri.sandbox-name":           PodSandboxName,
		"io.kubernetes.cri.sandbox-namespace":      PodSandboxNamespace,
	}
	pidns := ShapeSpec(spec)
	if spec.Linux != nil && spec.Linux.Resources != nil {
		spec.Linux.Resources.Devices = nil
	}
	return &agentpb.CreateContainerRequest{ContainerId: cid, ExecId: cid, OCI: ocispec.FromSpec(spec), SandboxPidns: pidns}
}

// genpolicyData is a policy_data section written as genpolicy writes one,
// for the pod container of PodContainerRequest in runc's default spec
// (testbundle.Spec); PolicyContainer's fields are filled in.
//
//go:embed genpolicy-data.json
var genpolicyData []byte

// PolicyContainer is what GenpolicyPolicyFor's policy data says of the
// one container it allows, beyond runc's default spec.
type PolicyContainer struct {
	// OCIVersion is the spec's ociVersion.
	OCIVersion string
	// Args and Env are the process's command line and environment.
	Args, Env []string
	// ReadonlyRoot is the spec's root.readonly.
	ReadonlyRoot bool
	// Cpath is where bundles are (root filesystems at
	// <Cpath>/<bundle id>/rootfs): GuestSharedDir in a pod VM.
	Cpath string
}

// PodPolicyContainer is the container of the pod VM tests: PodContainerArgs
// in testbundle.Spec, its rootfs in the virtio-fs share.
var PodPolicyContainer = PolicyContainer{
	OCIVersion: "1.3.0", Args: PodContainerArgs, Env: []string{"PATH=/bin", "HOME=/root"}, Cpath: GuestSharedDir,
}

// GenpolicyPolicy is GenpolicyPolicyFor(PodPolicyContainer).
func GenpolicyPolicy() string {
	text, err := GenpolicyPolicyFor(PodPolicyContainer)
	if err != nil {
		panic(err) // the embedded data is the package's own
	}
	return text
}

// GenpolicyPolicyFor is genpolicy's rules.rego (verbatim, kataref) with a
// policy data section allowing c, as PodContainerRequest sends it: a
// policy as genpolicy generates it for such a pod.
func GenpolicyPolicyFor(c PolicyContainer) (string, error) {
	var d map[string]any
	if err := json.Unmarshal(genpolicyData, &d); err != nil {
		return "", fmt.Errorf("policy data: %w", err)
	}
	oci := d["containers"].([]any)[0].(map[string]any)["OCI"].(map[string]any)
	oci["Version"] = c.OCIVersion
	oci["Root"].(map[string]any)["Readonly"] = c.ReadonlyRoot
	proc := oci["Process"].(map[string]any)
	proc["Args"], proc["Env"] = c.Args, c.Env
	common := d["common"].(map[string]any)
	common["cpath"], common["mount_source_cpath"] = c.Cpath, c.Cpath
	b, err := json.MarshalIndent(d, "", "    ")
	if err != nil {
		return "", err
	}
	return kataref.GenpolicyRules + "\npolicy_data := " + string(b) + "\n", nil
}
