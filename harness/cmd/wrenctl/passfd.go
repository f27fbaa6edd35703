package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/wren-vm/wren/agent/address"
	"github.com/wren-vm/wren/harness/client"
)

// passfdConns are a process's stdout and stderr as host connections to
// the agent's passfd port (Kata's passfd IO): the process writes to them
// directly, with no ReadStdout round trips.
type passfdConns struct {
	out, err         net.Conn
	outPort, errPort uint32
}

// dialPassfd connects stdout and stderr streams to port through the agent
// address's hybrid vsock socket (the only transport that tells the host
// port a stream comes from).
func dialPassfd(g globals, port uint32) (*passfdConns, error) {
	a, err := address.Parse(g.addr)
	if err != nil {
		return nil, err
	}
	if a.Scheme != address.HybridVsock {
		return nil, fmt.Errorf("--passfd needs an hvsock:// agent address (the pod VM's), not %s", g.addr)
	}
	ctx, cancel := g.rpcContext()
	defer cancel()
	p := &passfdConns{}
	if p.out, p.outPort, err = client.DialHybridVsockPort(ctx, a.Path, port); err != nil {
		return nil, fmt.Errorf("passfd stdout: %w", err)
	}
	if p.err, p.errPort, err = client.DialHybridVsockPort(ctx, a.Path, port); err != nil {
		p.out.Close()
		return nil, fmt.Errorf("passfd stderr: %w", err)
	}
	if p.outPort == 0 || p.errPort == 0 {
		p.Close()
		return nil, errors.New("--passfd: the hybrid vsock answered without a host port")
	}
	return p, nil
}

func (p *passfdConns) Close() {
	p.out.Close()
	p.err.Close()
}

// copyOut copies both streams to stdout and stderr until the guest closes
// them; the returned function waits for that.
func (p *passfdConns) copyOut(stdout, stderr io.Writer) (wait func() error) {
	var wg sync.WaitGroup
	var errs [2]error
	for i, s := range []struct {
		w io.Writer
		c net.Conn
	}{{stdout, p.out}, {stderr, p.err}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = io.Copy(s.w, s.c)
		}()
	}
	return func() error {
		wg.Wait()
		return errors.Join(errs[0], errs[1])
	}
}

// runPassfd starts the created container with its output on p's streams,
// waits for it and removes it; it returns the container's exit status.
func runPassfd(g globals, c *client.Client, p *passfdConns, id string) int {
	wait := p.copyOut(os.Stdout, os.Stderr)
	if err := startContainer(g, c, id); err != nil {
		removeContainer(g, c, id)
		return rpcFailed("StartContainer", err)
	}
	code, err := waitProcess(context.Background(), c, id, id, wait)
	removeContainer(g, c, id)
	if err != nil {
		return rpcFailed("WaitProcess", err)
	}
	return code
}
