package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/harness/vm"
)

// consoleEscape (Ctrl-]) leaves `wrenctl vm console`, as in telnet.
const consoleEscape = 0x1d

// consoleDrain is how long the console keeps printing after its input ends.
const consoleDrain = 2 * time.Second

// vmConsole attaches the terminal to the guest's debug shell (vsock
// DebugConsolePort; the agent serves a shell on a pty per connection).
func vmConsole(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, dir := vmFlags("console")
	if code, ok := parseVMFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	v, err := vm.Attach(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl vm console: %v\n", err)
		return exitError
	}
	if !v.Debug {
		fmt.Fprintf(stderr, "wrenctl vm console: the VM in %s was not started with --debug\n", v.Dir)
		return exitError
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	conn, err := client.DialHybridVsock(ctx, v.HybridVsock(), vm.DebugConsolePort)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl vm console: %v\n", err)
		return exitError
	}
	defer conn.Close()

	if f, ok := stdin.(*os.File); ok && f == os.Stdin {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			defer rawTerminal()()
			fmt.Fprintf(stderr, "connected to the guest shell; Ctrl-] leaves\r\n")
		}
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(stdout, conn) // until the connection ends, however it ends
		close(done)
	}()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				chunk := buf[:n]
				if i := bytes.IndexByte(chunk, consoleEscape); i >= 0 {
					_, _ = conn.Write(chunk[:i]) // leaving anyway
					conn.Close()
					return
				}
				if _, err := conn.Write(chunk); err != nil {
					return
				}
			}
			if err != nil {
				// End of piped input: a pty shell never sees EOF through
				// the stream, so give it a moment to answer, then leave.
				time.Sleep(consoleDrain)
				conn.Close()
				return
			}
		}
	}()
	<-done
	return exitOK
}
