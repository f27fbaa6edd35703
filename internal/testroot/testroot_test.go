package testroot

import "testing"

func TestMessage(t *testing.T) {
	if got := message(nil); got != "needs root" {
		t.Errorf("message() = %q", got)
	}
	if got := message([]string{"mounting"}); got != "needs root (mounting)" {
		t.Errorf("message(mounting) = %q", got)
	}
}

func TestRequire(t *testing.T) {
	ran := false
	t.Run("inner", func(t *testing.T) {
		Require(t, "this test")
		ran = true
	})
	if ran != Is() {
		t.Errorf("Require let the test run: %v, as root: %v", ran, Is())
	}
}
