package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/protocols/agentpb"
)

func healthRequest() *agentpb.CheckRequest { return &agentpb.CheckRequest{} }

// collectLog copies the agent's log stream into STATE/agent.log from a
// goroutine until the VM stops.
func (v *VM) collectLog(ctx context.Context) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	v.logDone, v.logClose = done, cancel
	go func() {
		defer close(done)
		_ = PumpLog(ctx, v.Dir)
	}()
}

// PumpLog copies the agent's JSON log stream (vsock LogPort; the agent
// keeps what it logged before the connection) from the VM in dir into
// dir/agent.log, until the guest closes the stream or ctx ends.
func PumpLog(ctx context.Context, dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, agentLogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	conn, err := client.DialHybridVsock(ctx, filepath.Join(dir, hvsockFile), LogPort)
	if err != nil {
		return fmt.Errorf("agent log stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	_, err = io.Copy(f, conn)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// AgentLogText returns the agent's log stream received so far.
func (v *VM) AgentLogText() string {
	if v.AgentLog == "" {
		return ""
	}
	b, _ := os.ReadFile(v.AgentLog)
	return string(b)
}
