package iptables

import (
	"context"
	"strings"
	"testing"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/internal/testnetns"
)

func TestRestoreThenSaveInNetns(t *testing.T) {
	if _, err := Save(context.Background(), false); errdefs.KindOf(err) == errdefs.ErrFailedPrecondition {
		t.Skip("iptables not installed")
	}
	testnetns.Run(t, func() {
		rules := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -s 10.9.8.7/32 -j DROP\nCOMMIT\n"
		if _, err := Restore(context.Background(), false, []byte(rules)); err != nil {
			t.Error(err)
			return
		}
		out, err := Save(context.Background(), false)
		if err != nil {
			t.Error(err)
			return
		}
		if !strings.Contains(string(out), "-A INPUT -s 10.9.8.7/32 -j DROP") {
			t.Errorf("saved rules lack the restored one:\n%s", out)
		}
		if _, err := Restore(context.Background(), false, []byte("*filter\n-A NOCHAIN -j DROP\nCOMMIT\n")); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
			t.Errorf("bad rules: %v", err)
		}
		if _, err := Restore(context.Background(), true, nil); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
			t.Errorf("empty rules: %v", err)
		}
	})
}

func TestMissingToolIsFailedPrecondition(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Save(context.Background(), true)
	if errdefs.KindOf(err) != errdefs.ErrFailedPrecondition || !strings.Contains(err.Error(), "ip6tables-save") {
		t.Fatalf("got %v, want FailedPrecondition naming ip6tables-save", err)
	}
}
