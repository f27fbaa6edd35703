package server

import (
	"errors"
	"fmt"
	"reflect"
	"unsafe"

	"github.com/containerd/ttrpc"
)

// method is one registered unary method.
type method struct {
	full   string // "/service/method", as ttrpc's UnaryServerInfo names it
	fn     ttrpc.Method
	inline bool
}

// methodTable maps service name, then method name, to its method.
type methodTable map[string]map[string]*method

// lookup finds a method without allocating: the string conversions of a
// map index expression do not copy.
func (t methodTable) lookup(service, name []byte) (*method, bool, bool) {
	svc, ok := t[string(service)]
	if !ok {
		return nil, false, false
	}
	m, ok := svc[string(name)]
	return m, true, ok
}

// buildMethods builds the dispatch table from the service descriptors
// registered on reg.
//
// The generated Register functions (protoc-gen-go-ttrpc) only accept a
// *ttrpc.Server, which keeps its descriptors in an unexported field
// (v1.2.x: Server.services *serviceSet, serviceSet.services
// map[string]*ServiceDesc). Reading that one field lets the generated
// code stay the only place that knows the methods; if a ttrpc upgrade
// moves it, buildMethods fails and Serve falls back to the stock server.
func buildMethods(reg *ttrpc.Server, inline []string) (methodTable, error) {
	descs, err := registeredServices(reg)
	if err != nil {
		return nil, err
	}
	isInline := make(map[string]bool, len(inline))
	for _, m := range inline {
		isInline[m] = true
	}
	t := make(methodTable, len(descs))
	for name, desc := range descs {
		if len(desc.Streams) > 0 {
			return nil, fmt.Errorf("service %s has streaming methods, which only the stock server serves", name)
		}
		svc := make(map[string]*method, len(desc.Methods))
		for mname, fn := range desc.Methods {
			full := "/" + name + "/" + mname
			svc[mname] = &method{full: full, fn: fn, inline: isInline[full]}
		}
		t[name] = svc
	}
	return t, nil
}

var errRegistryLayout = errors.New("cannot read the service descriptors of this ttrpc version")

// registeredServices reads the descriptor map of reg (see buildMethods).
func registeredServices(reg *ttrpc.Server) (map[string]*ttrpc.ServiceDesc, error) {
	set := reflect.ValueOf(reg).Elem().FieldByName("services")
	if !set.IsValid() || set.Kind() != reflect.Pointer || set.IsNil() || set.Elem().Kind() != reflect.Struct {
		return nil, errRegistryLayout
	}
	m := set.Elem().FieldByName("services")
	want := reflect.TypeFor[map[string]*ttrpc.ServiceDesc]()
	if !m.IsValid() || m.Type() != want {
		return nil, errRegistryLayout
	}
	return *(*map[string]*ttrpc.ServiceDesc)(unsafe.Pointer(m.UnsafeAddr())), nil
}
