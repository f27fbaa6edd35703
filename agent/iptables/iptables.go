// Package iptables saves and restores the guest's packet filter rules for
// GetIPTables/SetIPTables with the guest's own iptables-save and
// iptables-restore (or the ip6tables ones).
package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/wren-vm/wren/agent/errdefs"
)

// maxOutput bounds what a tool may print: the reply must fit a ttrpc
// message (4 MiB).
const maxOutput = 3 << 20

func tool(ipv6 bool, verb string) string {
	if ipv6 {
		return "ip6tables-" + verb
	}
	return "iptables-" + verb
}

func run(ctx context.Context, name string, stdin []byte) ([]byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, errdefs.Errorf(errdefs.ErrFailedPrecondition, "%s is not installed in the guest", name)
	}
	cmd := exec.CommandContext(ctx, path)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut limitedBuffer
	out.limit, errOut.limit = maxOutput, 4096
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "%s failed (%v): %s", name, ee, strings.TrimSpace(errOut.String()))
		}
		return nil, fmt.Errorf("run %s: %w", name, err)
	}
	if out.overflow {
		return nil, errdefs.Errorf(errdefs.ErrResourceExhausted, "%s printed more than %d bytes", name, maxOutput)
	}
	return out.Bytes(), nil
}

// Save returns iptables-save's (or ip6tables-save's) output.
func Save(ctx context.Context, ipv6 bool) ([]byte, error) {
	return run(ctx, tool(ipv6, "save"), nil)
}

// Restore feeds rules to iptables-restore (or ip6tables-restore) and
// returns what it printed.
func Restore(ctx context.Context, ipv6 bool, rules []byte) ([]byte, error) {
	if len(bytes.TrimSpace(rules)) == 0 {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "no rules to restore")
	}
	return run(ctx, tool(ipv6, "restore"), rules)
}

type limitedBuffer struct {
	bytes.Buffer
	limit    int
	overflow bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.Len(); len(p) > room {
		b.overflow = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
