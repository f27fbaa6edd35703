package rpc

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// TestEveryMethodHandled: each method Register registers (every method of
// grpc.AgentService and grpc.Health, read from their descriptors) has a
// handler declared in this package: none is answered by an embedded stub
// or a generated default. (SetPolicy, the last that was, answers
// Unimplemented only in an agent built without the policy engine:
// TestSetPolicyWithoutEngineIsUnimplemented.)
func TestEveryMethodHandled(t *testing.T) {
	handlers := declaredMethods(t)
	services := []struct {
		desc     protoreflect.ServiceDescriptor
		receiver string // the type that declares the handlers
	}{
		{agentpb.File_wren_protocols_agent_proto.Services().ByName("AgentService"), "Agent"},
		{agentpb.File_wren_protocols_health_proto.Services().ByName("Health"), "Health"},
	}
	registered := 0
	for _, svc := range services {
		methods := svc.desc.Methods()
		for i := range methods.Len() {
			name := string(methods.Get(i).Name())
			registered++
			if !handlers[svc.receiver][name] {
				t.Errorf("%s/%s: no handler on %s", svc.desc.FullName(), name, svc.receiver)
			}
		}
	}
	if registered != 44 {
		t.Errorf("%d methods registered, want Kata's 44", registered)
	}
}

// declaredMethods maps each receiver type of this package's non-test
// source to the methods declared on it, so that a promoted stub does not
// count as a handler.
func declaredMethods(t *testing.T) map[string]map[string]bool {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil {
				continue
			}
			typ := fd.Recv.List[0].Type
			if star, ok := typ.(*ast.StarExpr); ok {
				typ = star.X
			}
			if id, ok := typ.(*ast.Ident); ok {
				if out[id.Name] == nil {
					out[id.Name] = map[string]bool{}
				}
				out[id.Name][fd.Name.Name] = true
			}
		}
	}
	return out
}
