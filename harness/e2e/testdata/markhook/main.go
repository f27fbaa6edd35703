// Command markhook is an OCI hook for the e2e tests of guest_hook_path: it
// reads the container's state from stdin and appends "<name> <kind>" (its
// arguments, as Kata's agent passes them) to marks/<container id> beside
// its kind directory, which the test reads from the host side of the
// share. A prestart run for a container whose id starts with "hookfail"
// fails, to show that a failing prestart hook fails the create.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	var state struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&state); err != nil || state.ID == "" {
		fmt.Fprintln(os.Stderr, "markhook: no container state on stdin:", err)
		os.Exit(2)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "markhook:", err)
		os.Exit(2)
	}
	marks := filepath.Join(filepath.Dir(filepath.Dir(exe)), "marks")
	if err := os.MkdirAll(marks, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "markhook:", err)
		os.Exit(2)
	}
	f, err := os.OpenFile(filepath.Join(marks, state.ID), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "markhook:", err)
		os.Exit(2)
	}
	fmt.Fprintln(f, strings.Join(os.Args, " "))
	f.Close()
	if len(os.Args) > 1 && os.Args[1] == "prestart" && strings.HasPrefix(state.ID, "hookfail") {
		os.Exit(1)
	}
}
