package server

import (
	"fmt"

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

// buildMethods builds the dispatch table from the registered service
// descriptions, marking the inline methods.
func buildMethods(services map[string]*ttrpc.ServiceDesc, inline []string) (methodTable, error) {
	isInline := make(map[string]bool, len(inline))
	for _, m := range inline {
		isInline[m] = true
	}
	t := make(methodTable, len(services))
	for name, desc := range services {
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
