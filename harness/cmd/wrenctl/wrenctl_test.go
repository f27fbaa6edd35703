package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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
}
