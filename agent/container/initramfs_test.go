package container

import "testing"

// RootMount names the filesystem at / (what the agent logs at boot), and
// RootIsInitramfs says rootfs exactly when / is rootfs on this machine.
func TestRootMount(t *testing.T) {
	m, err := RootMount()
	if err != nil {
		t.Fatal(err)
	}
	if m.Mountpoint != "/" || m.FSType == "" {
		t.Fatalf("root mount %+v", m)
	}
	if got, want := RootIsInitramfs(), m.FSType == "rootfs"; got != want {
		t.Errorf("RootIsInitramfs() = %v with / of type %q", got, m.FSType)
	}
}
