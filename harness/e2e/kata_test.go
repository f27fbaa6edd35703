package e2e

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// testStringUser: CreateContainer's string_user names the init's user by
// name, resolved in the container's own /etc/passwd inside the pod VM; an
// unknown name is InvalidArgument.
func (p *pod) testStringUser(t *testing.T) {
	c := p.newContainer(t, "stringuser", "/bin/sh", "-c", "id -u; id -g")
	ctx, cancel := p.ctx()
	defer cancel()
	bad := c.request()
	bad.StringUser = &agentpb.StringUser{Uid: "mallory"}
	if _, err := p.c.Agent.CreateContainer(ctx, bad); status.Code(unwrap(err)) != codes.InvalidArgument {
		t.Fatalf("string_user naming an unknown user: %v, want InvalidArgument", err)
	}
	c.stringUser = &agentpb.StringUser{Uid: "nobody"}
	out := p.run(t, c, nil)
	if out.stdout != "65534\n65534\n" {
		t.Errorf("a container as string_user nobody printed %q (stderr %q), want 65534 twice", out.stdout, out.stderr)
	}
}
