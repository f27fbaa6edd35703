package bench

import (
	"context"
	"errors"

	"github.com/wren-vm/wren/harness/client"
)

var errNoContainers = errors.New("container figures need the agent's container RPCs (branch containers)")

// sandboxOneContainer is CreateSandbox, then one /bin/true container run
// to completion and removed.
var sandboxOneContainer = &warmup{name: "CreateSandbox + one container", fn: func(ctx context.Context, r *Runner, c *client.Client) error {
	return errNoContainers
}}

var containerFigures []struct {
	id string
	fn figureFunc
}
