package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// readChunk is what one ReadStdout/ReadStderr asks for (the Kata shim uses
// 32 KiB; larger chunks mean fewer round trips).
const readChunk = 256 << 10

// outputConns are the connections a process's output is read on: one
// synchronous client per stream, so that a read blocked on one stream
// holds up neither the other stream nor the calls on the main connection,
// and each chunk is read into a buffer the client keeps
// (client.Sync.ReadStream) instead of a fresh message. They are dialled
// before the process starts, so that a failure leaves nothing running.
type outputConns struct {
	stdout, stderr *client.Sync // stderr is nil with a tty
}

func dialOutput(g globals, tty bool) (*outputConns, error) {
	ctx, cancel := g.rpcContext()
	defer cancel()
	o := &outputConns{}
	var err error
	if o.stdout, err = client.DialSync(ctx, g.addr); err != nil {
		return nil, fmt.Errorf("output connection: %w", err)
	}
	if !tty {
		if o.stderr, err = client.DialSync(ctx, g.addr); err != nil {
			o.stdout.Close()
			return nil, fmt.Errorf("output connection: %w", err)
		}
	}
	return o, nil
}

func (o *outputConns) Close() {
	o.stdout.Close()
	if o.stderr != nil {
		o.stderr.Close()
	}
}

// attach connects this process's stdio to a container process over the
// agent's stream RPCs: it copies stdin in, stdout and stderr out (until the
// agent reports EOF) on out's connections, and, with a tty, forwards
// window size changes. The returned function waits for the output copies
// to finish.
func attach(ctx context.Context, c *client.Client, out *outputConns, cid, execID string, tty bool, stdin io.Reader, stdout, stderr io.Writer) (wait func() error) {
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	copyOut := func(s *client.Sync, fromStderr bool, w io.Writer) {
		defer wg.Done()
		for {
			data, err := s.ReadStream(ctx, fromStderr, cid, execID, readChunk)
			if err == io.EOF {
				return
			}
			if err != nil {
				errs <- err
				return
			}
			// data is valid until the next ReadStream: write it first.
			if _, err := w.Write(data); err != nil {
				errs <- err
				return
			}
		}
	}
	wg.Add(1)
	go copyOut(out.stdout, false, stdout)
	if !tty {
		wg.Add(1)
		go copyOut(out.stderr, true, stderr)
	}
	go copyIn(ctx, c, cid, execID, stdin)
	if tty {
		go forwardWinch(ctx, c, cid, execID)
	}
	return func() error {
		wg.Wait()
		close(errs)
		return <-errs
	}
}

// copyIn sends stdin; at its EOF it closes the process's stdin. It runs
// until then or until ctx ends (the process may finish first).
func copyIn(ctx context.Context, c *client.Client, cid, execID string, stdin io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			if _, werr := c.Agent.WriteStdin(ctx, &agentpb.WriteStreamRequest{ContainerId: cid, ExecId: execID, Data: buf[:n]}); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// Best effort: a process that already exited has no stdin to close.
				_, _ = c.Agent.CloseStdin(ctx, &agentpb.CloseStdinRequest{ContainerId: cid, ExecId: execID})
			}
			return
		}
	}
}

// forwardWinch sends the terminal size now and on every SIGWINCH.
func forwardWinch(ctx context.Context, c *client.Client, cid, execID string) {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGWINCH)
	defer signal.Stop(sigc)
	for {
		if ws, err := unix.IoctlGetWinsize(int(os.Stdin.Fd()), unix.TIOCGWINSZ); err == nil {
			// Best effort: a failed resize leaves the old size, as a lost SIGWINCH would.
			_, _ = c.Agent.TtyWinResize(ctx, &agentpb.TtyWinResizeRequest{ContainerId: cid, ExecId: execID, Row: uint32(ws.Row), Column: uint32(ws.Col)})
		}
		select {
		case <-ctx.Done():
			return
		case <-sigc:
		}
	}
}

// rawTerminal puts stdin in raw mode when it is a terminal (the container's
// tty does the line editing) and returns how to restore it.
func rawTerminal() (restore func()) {
	fd := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return func() {}
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return func() {}
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) } // on exit: nothing else to try
}
