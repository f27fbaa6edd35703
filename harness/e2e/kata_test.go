package e2e

import (
	"slices"
	"testing"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// testListInterfacesAndRoutes: the guest's interfaces and routes as Kata's
// agent lists them: every link, loopback included, and the main table.
func (p *pod) testListInterfacesAndRoutes(t *testing.T) {
	ctx, cancel := p.ctx()
	defer cancel()
	ifs, err := p.c.Agent.ListInterfaces(ctx, &agentpb.ListInterfacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs.GetInterfaces() {
		names = append(names, i.GetName())
	}
	if !slices.Contains(names, "lo") {
		t.Errorf("ListInterfaces in the pod VM: %q, want lo among them, as Kata's agent lists it", names)
	}
	if _, err := p.c.Agent.ListRoutes(ctx, &agentpb.ListRoutesRequest{}); err != nil {
		t.Errorf("ListRoutes: %v", err)
	}
}
