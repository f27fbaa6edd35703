package kata

import (
	_ "embed"
	"strings"

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
// for container cid of a Kubernetes pod, whose root filesystem is share
// directory name (GuestRootfs(name)) and whose spec is spec: the CRI and
// Kata annotations genpolicy's rules correlate, the spec shaped by
// ShapeSpec, and no device cgroup rules (Kata's constrainGRPCSpec drops
// them: the agent applies its own).
func PodContainerRequest(cid, name string, spec *specs.Spec) *agentpb.CreateContainerRequest {
	spec.Root.Path = GuestRootfs(name)
	spec.Hostname = ""
	spec.Annotations = map[string]string{
		"io.katacontainers.pkg.oci.bundle_path":    bundlePrefix + name,
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
// for the pod container of PodContainerRequest running PodContainerArgs in
// runc's default spec (testbundle.Spec).
//
//go:embed genpolicy-data.json
var genpolicyData string

// GenpolicyPolicy is genpolicy's rules.rego (verbatim, kataref) with the
// policy data section for PodContainerRequest: a policy as genpolicy
// generates it for that pod.
func GenpolicyPolicy() string {
	return kataref.GenpolicyRules + "\npolicy_data := " + strings.TrimSpace(genpolicyData) + "\n"
}
