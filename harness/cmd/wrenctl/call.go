package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// services are the agent's ttrpc services, in the order list prints them.
var services = []protoreflect.ServiceDescriptor{
	agentpb.File_wren_protocols_agent_proto.Services().ByName("AgentService"),
	agentpb.File_wren_protocols_health_proto.Services().ByName("Health"),
}

// findMethod looks an RPC up by its method name in either service.
func findMethod(name string) (protoreflect.MethodDescriptor, bool) {
	for _, svc := range services {
		if m := svc.Methods().ByName(protoreflect.Name(name)); m != nil {
			return m, true
		}
	}
	return nil, false
}

// listCommand is `wrenctl list`: every RPC, sorted, with its service and a
// one-line description.
func listCommand(_ globals, args []string) int {
	if len(args) == 1 && isHelpFlag(args[0]) {
		commandUsage(os.Stdout, findCommand("list"))
		return exitOK
	}
	if len(args) > 0 {
		return usageError(os.Stderr, "list takes no arguments")
	}
	var lines []string
	for _, svc := range services {
		for i := 0; i < svc.Methods().Len(); i++ {
			m := svc.Methods().Get(i)
			lines = append(lines, fmt.Sprintf("%-31s %-13s %s", m.Name(), svc.Name(), rpcSummaries[string(m.Name())]))
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	return exitOK
}

func isHelpFlag(s string) bool {
	return s == "-h" || s == "-help" || s == "--help"
}

// callCommand sends one RPC with a protojson request and prints the reply.
func callCommand(g globals, name string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	m, ok := findMethod(name)
	if !ok {
		return usageError(stderr, "unknown RPC or command %q (commands: 'wrenctl help'; RPCs: 'wrenctl list')", name)
	}
	if len(args) == 1 && isHelpFlag(args[0]) {
		_ = describe(stdout, m, false) // stdout: a failed write has nowhere to be reported
		return exitOK
	}
	if len(args) > 1 {
		return usageError(stderr, "%s takes at most one REQUEST argument", name)
	}
	req, err := newMessage(m.Input())
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl: %v\n", err)
		return exitError
	}
	if len(args) == 1 && name == "SetPolicy" && isPolicyFile(args[0]) {
		// `wrenctl SetPolicy FILE`: the file is the policy (Rego) itself.
		text, err := os.ReadFile(args[0])
		if err != nil {
			return usageError(stderr, "policy file: %v", err)
		}
		req = &agentpb.SetPolicyRequest{Policy: string(text)}
	} else if len(args) == 1 {
		text, err := requestText(args[0], stdin)
		if err != nil {
			return usageError(stderr, "%v", err)
		}
		if err := protojson.Unmarshal(text, req); err != nil {
			return usageError(stderr, "request for %s is not a valid %s: %v", name, m.Input().FullName(), err)
		}
	}
	resp, err := newMessage(m.Output())
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl: %v\n", err)
		return exitError
	}
	if g.addr == "" {
		return usageError(stderr, "no agent address: use --addr or set WREN_ADDR")
	}

	if err := checkAddr(g.addr); err != nil {
		fmt.Fprintf(stderr, "wrenctl: %v\n", err)
		return exitError
	}
	ctx, cancel := g.rpcContext()
	defer cancel()
	c, err := client.DialSync(ctx, g.addr)
	if err != nil {
		return dialFailed(stderr, g.addr, err)
	}
	defer c.Close()
	if err := c.Call(ctx, string(m.Parent().FullName()), string(m.Name()), req, resp); err != nil {
		fmt.Fprintf(stderr, "wrenctl: %s: %s\n", name, rpcMessage(err))
		return exitError
	}
	out, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(resp)
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl: encode response: %v\n", err)
		return exitError
	}
	fmt.Fprintln(stdout, string(out))
	return exitOK
}

// isPolicyFile tells SetPolicy's policy file from a REQUEST: inline JSON,
// @file of JSON, or - for stdin.
func isPolicyFile(arg string) bool {
	return arg != "-" && !strings.HasPrefix(arg, "@") && !strings.HasPrefix(strings.TrimSpace(arg), "{")
}

func newMessage(d protoreflect.MessageDescriptor) (proto.Message, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(d.FullName())
	if err != nil {
		return nil, fmt.Errorf("message type %s: %w", d.FullName(), err)
	}
	return mt.New().Interface(), nil
}

// requestText reads REQUEST: inline JSON, @file, or - for stdin.
func requestText(arg string, stdin io.Reader) ([]byte, error) {
	switch {
	case arg == "-":
		return io.ReadAll(stdin)
	case strings.HasPrefix(arg, "@"):
		b, err := os.ReadFile(arg[1:])
		if err != nil {
			return nil, fmt.Errorf("request file: %w", err)
		}
		return b, nil
	}
	return []byte(arg), nil
}
