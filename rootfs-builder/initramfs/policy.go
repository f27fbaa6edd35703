package initramfs

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"path"

	"github.com/wren-vm/wren/agent/policy/kataref"
	"github.com/wren-vm/wren/rootfs-builder/cpio"
)

// PolicyPath is where the agent reads its default policy
// (agent/config.DefaultPolicyFile, Kata's default-policy.rego).
const PolicyPath = "/etc/kata-opa/default-policy.rego"

// maxPolicyBytes is the largest policy the agent accepts
// (agent/policy.DefaultLimits).
const maxPolicyBytes = 16 << 20

// HasPolicyEngine reports whether the Go binary at agent links the policy
// engine (OPA), as the agent built with `make agent-policy` does. An init
// that is no Go program (tests use busybox) has none.
func HasPolicyEngine(agent string) (bool, error) {
	info, err := buildinfo.ReadFile(agent)
	if err != nil {
		return false, fmt.Errorf("%s: no Go build information: %w", agent, err)
	}
	for _, d := range info.Deps {
		if d.Path == "github.com/open-policy-agent/opa" {
			return true, nil
		}
	}
	return false, nil
}

// addPolicy installs the default agent policy for an agent with the
// policy engine: opts.Policy, or Kata's allow-all. A policy for an agent
// without the engine is an error: it would be silently ignored.
func addPolicy(a *cpio.Archive, opts Options) error {
	engine, err := HasPolicyEngine(opts.Init)
	if !engine {
		if opts.Policy == "" {
			return nil
		}
		if err != nil {
			return fmt.Errorf("initramfs: policy %s given, but the agent has no policy engine: %w", opts.Policy, err)
		}
		return fmt.Errorf("initramfs: policy %s given, but the agent %s has no policy engine (build it with `make agent-policy`)", opts.Policy, opts.Init)
	}
	text := []byte(kataref.AllowAll)
	if opts.Policy != "" {
		if text, err = os.ReadFile(opts.Policy); err != nil {
			return fmt.Errorf("initramfs: policy: %w", err)
		}
		if len(text) == 0 || len(text) > maxPolicyBytes {
			return fmt.Errorf("initramfs: policy %s: %d bytes, want 1 to %d", opts.Policy, len(text), maxPolicyBytes)
		}
	}
	if err := add(a.Dir(path.Dir(PolicyPath), 0o755)); err != nil {
		return err
	}
	progress(opts.Progress, "initramfs: agent policy %s (%d bytes)", PolicyPath, len(text))
	return add(a.File(PolicyPath, 0o644, text))
}
