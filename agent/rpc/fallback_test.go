package rpc

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// TestEveryMethodHandledOrUnimplementedOnPurpose: each method Register
// registers (every method of grpc.AgentService and grpc.Health, read from
// their descriptors) either has a handler declared in this package, or is
// one of fallback's stubs and answers Unimplemented naming itself through
// the wire. Never both: a handler would shadow the stub, which would then
// be dead code claiming the agent does not do what it does.
func TestEveryMethodHandledOrUnimplementedOnPurpose(t *testing.T) {
	handlers := declaredMethods(t)
	stubs := map[string]bool{}
	ft := reflect.TypeOf(fallback{})
	for i := range ft.NumMethod() {
		stubs[ft.Method(i).Name] = true
	}
	// SetPolicy alone, which has an issue of its own, answers
	// Unimplemented; a new stub has to be added here on purpose too.
	if got := slices.Sorted(maps.Keys(stubs)); !slices.Equal(got, []string{"SetPolicy"}) {
		t.Errorf("answered Unimplemented on purpose: %v, want only SetPolicy", got)
	}
	services := []struct {
		desc     protoreflect.ServiceDescriptor
		receiver string // the type that declares the handlers
		stubs    map[string]bool
	}{
		{agentpb.File_wren_protocols_agent_proto.Services().ByName("AgentService"), "Agent", stubs},
		{agentpb.File_wren_protocols_health_proto.Services().ByName("Health"), "Health", nil},
	}
	c := serve(t, New(Options{}))
	registered := 0
	for _, svc := range services {
		methods := svc.desc.Methods()
		for i := range methods.Len() {
			name := string(methods.Get(i).Name())
			registered++
			handled, stub := handlers[svc.receiver][name], svc.stubs[name]
			switch {
			case handled && stub:
				t.Errorf("%s/%s: the handler shadows fallback's stub; remove the stub", svc.desc.FullName(), name)
			case !handled && !stub:
				t.Errorf("%s/%s: neither a handler on %s nor a fallback stub", svc.desc.FullName(), name, svc.receiver)
			case stub:
				checkAnswersUnimplemented(t, c, name)
			}
		}
	}
	for name := range stubs {
		if agentpb.File_wren_protocols_agent_proto.Services().ByName("AgentService").Methods().ByName(protoreflect.Name(name)) == nil {
			t.Errorf("fallback stub %s is no AgentService method", name)
		}
	}
	t.Logf("%d methods registered: %d answered Unimplemented on purpose", registered, len(stubs))
}

// checkAnswersUnimplemented calls method with an empty request through the
// ttrpc client c.
func checkAnswersUnimplemented(t *testing.T, c agentpb.AgentServiceService, method string) {
	t.Helper()
	m := reflect.ValueOf(c).MethodByName(method)
	req := reflect.New(m.Type().In(1).Elem())
	out := m.Call([]reflect.Value{reflect.ValueOf(context.Background()), req})
	err, _ := out[1].Interface().(error)
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "/grpc.AgentService/"+method+" ") {
		t.Errorf("%s: %v, want Unimplemented naming the method", method, err)
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
