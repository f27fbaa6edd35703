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

func TestWrenctlRPCError(t *testing.T) {
	a := testagent.Start(t)
	_, errOut, code := wrenctl(t, "", "--addr", a.Addr, "SetPolicy", `{"policy":"p"}`)
	if code != 1 || !strings.Contains(errOut, "Unimplemented") {
		t.Fatalf("SetPolicy: exit %d, stderr %q; want 1 and the status code", code, errOut)
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

func TestWrenctlUnreachableAgent(t *testing.T) {
	_, errOut, code := wrenctl(t, "", "--addr", "unix://"+filepath.Join(t.TempDir(), "none.sock"), "--timeout", "1s", "Check")
	if code != 1 || !strings.Contains(errOut, "none.sock") {
		t.Fatalf("exit %d, stderr %q; want 1 naming the socket", code, errOut)
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
