//go:build policy

package assemble

import (
	"context"
	"log/slog"

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/policy"
	"github.com/wren-vm/wren/agent/policy/opa"
	"github.com/wren-vm/wren/agent/rpc"
)

// newPolicy loads the agent policy from cfg.PolicyFile into OPA, the
// engine of the build tagged "policy" (make agent-policy); the default
// build has none (policy_off.go) and links neither. A policy that does
// not load leaves every request but SetPolicy refused (policy.FromFile).
func newPolicy(ctx context.Context, log *slog.Logger, cfg config.Config) rpc.Gate {
	if log == nil {
		log = slog.Default()
	}
	p, err := policy.FromFile(ctx, opa.Engine{}, policy.DefaultLimits, log, cfg.PolicyFile)
	if err != nil {
		log.Error("agent policy: refusing every request but SetPolicy", "err", err)
	} else {
		log.Info("agent policy loaded", "file", cfg.PolicyFile)
	}
	return p
}
