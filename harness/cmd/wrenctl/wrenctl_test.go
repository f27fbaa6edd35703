package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/wren-vm/wren/harness/testagent"
)

// wrenctl runs the built binary and returns stdout, stderr and exit code.
func wrenctl(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testagent.Binary(t, "wrenctl"), args...)
	cmd.Env = append(os.Environ(), "WREN_ADDR=")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestWrenctlCheckAndVersion(t *testing.T) {
	a := testagent.Start(t)
	out, errOut, code := wrenctl(t, "", "--addr", a.Addr, "Check")
	if code != 0 {
		t.Fatalf("Check exit %d: %s", code, errOut)
	}
	var check struct{ Status string }
	if err := json.Unmarshal([]byte(out), &check); err != nil || check.Status != "SERVING" {
		t.Fatalf("Check output %q: %v", out, err)
	}
	// The address can come from WREN_ADDR, and the request from stdin.
	cmd := exec.Command(testagent.Binary(t, "wrenctl"), "Version", "-")
	cmd.Env = append(os.Environ(), "WREN_ADDR="+a.Addr)
	cmd.Stdin = strings.NewReader(`{"service": "agent"}`)
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	var v struct{ AgentVersion, GrpcVersion string }
	if err := json.Unmarshal(b, &v); err != nil || v.AgentVersion == "" || v.GrpcVersion != "0.0.1" {
		t.Fatalf("Version output %q: %v", b, err)
	}
}

func TestWrenctlRequestFromFile(t *testing.T) {
	a := testagent.Start(t)
	p := filepath.Join(t.TempDir(), "req.json")
	if err := os.WriteFile(p, []byte(`{"service":"x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "Check", "@"+p); code != 0 {
		t.Fatalf("Check @file exit %d: %s", code, errOut)
	}
}

// A failed RPC prints its code and the agent's message once each, not the
// client's wrappings ("grpc.AgentService/X: rpc error: code = ... desc").
func TestWrenctlRPCError(t *testing.T) {
	a := testagent.Start(t)
	_, errOut, code := wrenctl(t, "", "--addr", a.Addr, "SetPolicy", `{"policy":"p"}`)
	if code != 1 || !strings.HasPrefix(errOut, "wrenctl: SetPolicy: Unimplemented: ") {
		t.Fatalf("SetPolicy: exit %d, stderr %q; want 1 and the status code", code, errOut)
	}
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "CreateSandbox", `{"hostname":"pod"}`); code != 0 {
		t.Fatalf("CreateSandbox: exit %d: %s", code, errOut)
	}
	_, errOut, code = wrenctl(t, "", "--addr", a.Addr, "CreateSandbox", `{"hostname":"pod"}`)
	if code != 1 || !strings.HasPrefix(errOut, "wrenctl: CreateSandbox: AlreadyExists: ") {
		t.Errorf("second CreateSandbox: exit %d, stderr %q", code, errOut)
	}
	for _, twice := range []string{"AlreadyExists", "CreateSandbox"} {
		if n := strings.Count(errOut, twice); n != 1 {
			t.Errorf("%q appears %d times in %q", twice, n, errOut)
		}
	}
	if strings.Contains(errOut, "rpc error") || strings.Contains(errOut, "grpc.AgentService/") {
		t.Errorf("client wrapping in %q", errOut)
	}
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "DestroySandbox"); code != 0 {
		t.Errorf("DestroySandbox: exit %d: %s", code, errOut)
	}
}

func TestWrenctlUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no rpc", nil, "usage"},
		{"unknown rpc", []string{"--addr", "unix:///x", "Frobnicate"}, `unknown RPC or command "Frobnicate"`},
		{"bad json", []string{"--addr", "unix:///x", "Check", "{not json"}, "not a valid grpc.CheckRequest"},
		{"unknown field", []string{"--addr", "unix:///x", "Check", `{"nope":1}`}, "not a valid grpc.CheckRequest"},
		{"missing file", []string{"--addr", "unix:///x", "Check", "@/does/not/exist"}, "request file"},
		{"no address", []string{"Check"}, "no agent address"},
		{"bad flag", []string{"--nope"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := wrenctl(t, "", tt.args...)
			if code != 2 || !strings.Contains(errOut, tt.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errOut, tt.want)
			}
		})
	}
}

// Nothing listening at the address: the error says so, names the address
// once and says what to do.
func TestWrenctlUnreachableAgent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{{"Check"}, {"exec", "c1", "true"}} {
		_, errOut, code := wrenctl(t, "", append([]string{"--addr", "unix://" + sock, "--timeout", "1s"}, args...)...)
		if code != 1 || strings.Count(errOut, sock) != 1 {
			t.Errorf("%v: exit %d, stderr %q; want 1 naming the socket once", args, code, errOut)
		}
		for _, want := range []string{"no agent at unix://" + sock, "not running or not listening", "--addr"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("%v: stderr %q lacks %q", args, errOut, want)
			}
		}
	}
	// A hybrid vsock socket that does not exist: no VM runs there, said at
	// once rather than after --timeout of retries.
	_, errOut, code := wrenctl(t, "", "--addr", "hvsock://"+sock+":1024", "Check")
	if code != 1 || !strings.Contains(errOut, "no VM at") || !strings.Contains(errOut, "wrenctl vm up") {
		t.Errorf("hvsock without a VM: exit %d, stderr %q", code, errOut)
	}
}

func TestWrenctlList(t *testing.T) {
	out, _, code := wrenctl(t, "", "list")
	if code != 0 {
		t.Fatalf("list exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 44 {
		t.Errorf("list printed %d RPCs, want 44 (42 AgentService + 2 Health)", len(lines))
	}
	for _, want := range []string{"CreateContainer", "GetOOMEvent", "SetPolicy", "Check", "Version"} {
		if !strings.Contains(out, want+" ") {
			t.Errorf("list lacks %s", want)
		}
	}
	// NAME SERVICE description, the description a few words at least.
	for _, l := range lines {
		if f := strings.Fields(l); len(f) < 5 {
			t.Errorf("list line without a description: %q", l)
		}
	}
}

// Every RPC of the services has a one-line description, and the table
// names no RPC the services lack.
func TestRPCSummariesMatchTheServices(t *testing.T) {
	n := 0
	for _, svc := range services {
		for i := 0; i < svc.Methods().Len(); i++ {
			name := string(svc.Methods().Get(i).Name())
			n++
			if rpcSummaries[name] == "" {
				t.Errorf("%s has no summary in rpcSummaries", name)
			}
		}
	}
	if len(rpcSummaries) != n {
		t.Errorf("rpcSummaries has %d entries for %d RPCs", len(rpcSummaries), n)
	}
}

// Help is asked for in every way a user tries; each answers on stdout with
// exit 0 and says nothing on stderr.
func TestWrenctlHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"}, {"help", "run"}, {"help", "vm"}, {"help", "CreateSandbox"},
		{"list", "--help"}, {"describe", "--help"}, {"run", "--help"}, {"exec", "--help"},
		{"completion", "--help"}, {"help", "--help"}, {"vm", "--help"}, {"vm", "help"}, {"vm", "-h"},
		{"vm", "up", "--help"}, {"vm", "status", "--help"}, {"vm", "down", "--help"}, {"vm", "console", "-h"},
		{"Check", "--help"}, {"--addr", "unix:///x", "CreateContainer", "-h"},
	} {
		out, errOut, code := wrenctl(t, "", args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "usage") && !strings.Contains(out, "request ") {
			t.Errorf("wrenctl %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out, errOut)
		}
	}
	out, _, _ := wrenctl(t, "", "--help")
	for _, c := range commands {
		if !strings.Contains(out, "\n  "+c.name+" ") {
			t.Errorf("--help does not list %s:\n%s", c.name, out)
		}
	}
	for _, want := range []string{"--addr", "--timeout", "Exit status"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	out, _, _ = wrenctl(t, "", "vm", "up", "--help")
	for _, want := range []string{"--dir", "--kernel", "--shared-dir", "shared_dir="} {
		if !strings.Contains(out, want) {
			t.Errorf("vm up --help lacks %q:\n%s", want, out)
		}
	}
	if _, errOut, code := wrenctl(t, "", "help", "Frobnicate"); code != exitUsage || !strings.Contains(errOut, "Frobnicate") {
		t.Errorf("help Frobnicate: exit %d, stderr %q", code, errOut)
	}
}

// describe prints the request's fields with their types and nesting, and
// an example that wrenctl itself accepts as the request.
func TestWrenctlDescribe(t *testing.T) {
	out, errOut, code := wrenctl(t, "", "describe", "CreateSandbox")
	if code != 0 {
		t.Fatalf("describe: exit %d: %s", code, errOut)
	}
	for _, re := range []string{
		`(?m)^request grpc\.CreateSandboxRequest:$`,
		`(?m)^  hostname +string$`,
		`(?m)^  storages +repeated grpc\.Storage$`,
		`(?m)^    mountPoint +string$`,
		`(?m)^      groupChangePolicy +enum types\.FSGroupChangePolicy \{Always, OnRootMismatch\}$`,
		`(?m)^response google\.protobuf\.Empty$`,
		`"sandboxId": "sandboxId"`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("describe CreateSandbox does not match %s:\n%s", re, out)
		}
	}
	if _, errOut, code := wrenctl(t, "", "describe", "Frobnicate"); code != exitUsage || !strings.Contains(errOut, "Frobnicate") {
		t.Errorf("describe Frobnicate: exit %d, stderr %q", code, errOut)
	}
	// The example of every RPC parses as its request with every top-level
	// field present.
	for _, svc := range services {
		for i := 0; i < svc.Methods().Len(); i++ {
			m := svc.Methods().Get(i)
			example, err := exampleJSON(m.Input())
			if err != nil {
				t.Errorf("%s: %v", m.Name(), err)
				continue
			}
			req, _ := newMessage(m.Input())
			if err := protojson.Unmarshal([]byte(example), req); err != nil {
				t.Errorf("%s: example does not parse: %v\n%s", m.Name(), err, example)
			}
			fields := m.Input().Fields()
			for j := 0; j < fields.Len(); j++ {
				if !strings.Contains(example, `"`+fields.Get(j).JSONName()+`"`) {
					t.Errorf("%s: example lacks field %s", m.Name(), fields.Get(j).JSONName())
				}
			}
		}
	}
	// And the agent takes it.
	a := testagent.Start(t)
	req, _, code := wrenctl(t, "", "describe", "--example", "Check")
	if code != 0 {
		t.Fatalf("describe --example Check: exit %d", code)
	}
	if out, errOut, code := wrenctl(t, req, "--addr", a.Addr, "Check", "-"); code != 0 || !strings.Contains(out, "SERVING") {
		t.Errorf("Check with the example request: exit %d, %q %q", code, out, errOut)
	}
}

// The completion script, loaded into bash, completes commands, RPCs, vm
// verbs and a command's flags.
func TestWrenctlCompletionBash(t *testing.T) {
	script, errOut, code := wrenctl(t, "", "completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash: exit %d: %s", code, errOut)
	}
	f := filepath.Join(t.TempDir(), "wrenctl.bash")
	if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) []string {
		t.Helper()
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+w+"'")
		}
		prog := fmt.Sprintf("source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _wrenctl; printf '%%s\\n' \"${COMPREPLY[@]}\"",
			f, strings.Join(quoted, " "), len(words)-1)
		out, err := exec.Command("bash", "--norc", "--noprofile", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v: %s", err, out)
		}
		return strings.Fields(string(out))
	}
	for _, tt := range []struct {
		words []string
		want  []string
	}{
		{[]string{"wrenctl", "v"}, []string{"vm"}},
		{[]string{"wrenctl", "Ve"}, []string{"Version"}},
		{[]string{"wrenctl", "CreateS"}, []string{"CreateSandbox"}},
		{[]string{"wrenctl", "--addr", "unix:///x", "De"}, []string{"DestroySandbox"}},
		{[]string{"wrenctl", "vm", ""}, []string{"up", "status", "down", "template", "console"}},
		{[]string{"wrenctl", "vm", "up", "--ke"}, []string{"--kernel", "--kernel-params"}},
		{[]string{"wrenctl", "run", "--sh"}, []string{"--shared-dir"}},
		{[]string{"wrenctl", "describe", "WaitP"}, []string{"WaitProcess"}},
		{[]string{"wrenctl", "completion", ""}, []string{"bash"}},
	} {
		got := complete(tt.words...)
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("completing %q: got %q, want %q", tt.words, got, tt.want)
		}
	}
}
