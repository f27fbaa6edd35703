// Package testroot is the tests' one check for root: tests of namespaces,
// mounts, cgroups and containers skip themselves without it.
package testroot

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// Is reports whether the process runs as root (effective user id 0).
func Is() bool { return os.Geteuid() == 0 }

// Require skips t unless the process runs as root. why, if given, says
// what needs root; it ends up in the skip message.
func Require(t testing.TB, why ...string) {
	t.Helper()
	if !Is() {
		t.Skip(message(why))
	}
}

// Main is Require for a TestMain whose tests all need root: without root
// it prints the reason and exits 0 before any test runs.
func Main(why ...string) {
	if !Is() {
		fmt.Println("skipping: " + message(why))
		os.Exit(0)
	}
}

func message(why []string) string {
	if len(why) == 0 {
		return "needs root"
	}
	return "needs root (" + strings.Join(why, " ") + ")"
}
