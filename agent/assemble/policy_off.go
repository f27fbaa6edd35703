//go:build !policy

package assemble

import (
	"context"
	"log/slog"

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/rpc"
)

// newPolicy: the default build has no policy engine, so it checks nothing
// and answers SetPolicy Unimplemented (policy_on.go is the policy build's).
func newPolicy(context.Context, *slog.Logger, config.Config) rpc.Gate { return nil }
