package testnetns

import (
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The scratch namespace holds only lo, and the test's own namespace is not
// the scratch one, neither for Handle nor for Run.
func TestScratchNamespaces(t *testing.T) {
	h := Handle(t)
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 || links[0].Attrs().Name != "lo" {
		t.Errorf("a fresh namespace holds %d links (%v), want lo alone", len(links), links)
	}
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "scratch0"}, PeerName: "scratch1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName("scratch0"); err == nil {
		t.Error("a link made through the handle shows in the test's namespace")
	}

	own, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	var names []string
	Run(t, func() {
		in, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer in.Close()
		if in.Equal(own) {
			t.Error("Run's function runs in the test's own namespace")
		}
		links, err := netlink.LinkList()
		if err != nil {
			t.Error(err)
			return
		}
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
	})
	if !slices.Equal(names, []string{"lo"}) {
		t.Errorf("Run's namespace holds %v, want lo alone", names)
	}
}
