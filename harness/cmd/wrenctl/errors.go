package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/address"
	"github.com/wren-vm/wren/harness/client"
)

// Error texts name the cause and, where there is one, the fix: a newcomer
// reads them before any documentation.

// inVM reports whether addr reaches an agent in a VM (vsock or hybrid
// vsock), which cannot see this host's files.
func inVM(addr string) bool {
	a, err := address.Parse(addr)
	return err == nil && (a.Scheme == address.Vsock || a.Scheme == address.HybridVsock)
}

// checkAddr fails early where a dial could only wait: a hybrid vsock
// socket that does not exist means no VM runs there, and the dial would
// retry for the whole --timeout as if one were booting.
func checkAddr(addr string) error {
	a, err := address.Parse(addr)
	if err != nil {
		return fmt.Errorf("agent address %q: %w", addr, err)
	}
	if a.Scheme != address.HybridVsock {
		return nil
	}
	if _, err := os.Stat(a.Path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no VM at %s: %s does not exist (start one with `wrenctl vm up`, which prints its addr=)", addr, a.Path)
	}
	return nil
}

// dialFailed reports a failed connection to the agent.
func dialFailed(stderr io.Writer, addr string, err error) int {
	if client.NotListening(err) {
		// The system call's own words; the wrappings above repeat addr.
		cause := error(err)
		var sc *os.SyscallError
		if errors.As(err, &sc) {
			cause = sc
		}
		fmt.Fprintf(stderr, "wrenctl: no agent at %s: it is not running or not listening there (%v)\n"+
			"  start one (README, \"Driving an agent by hand\"; `wrenctl vm up` for one in a VM) or fix --addr / $WREN_ADDR\n", addr, cause)
		return exitError
	}
	fmt.Fprintf(stderr, "wrenctl: %v\n", err)
	return exitError
}

// rpcMessage renders a failed RPC as "CODE: message", taking the code and
// the agent's own message from the innermost status: the wrappings above
// it repeat both ("grpc.AgentService/X: rpc error: code = ... desc = ...").
func rpcMessage(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		st := se.GRPCStatus()
		return fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
	return err.Error()
}

// codeOf is the status code of a failed RPC (Unknown for other errors).
func codeOf(err error) codes.Code {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code()
	}
	return codes.Unknown
}

// rpcFailed prints an RPC error with its status code.
func rpcFailed(what string, err error) int {
	fmt.Fprintf(os.Stderr, "wrenctl: %s: %s\n", what, rpcMessage(err))
	return exitError
}
