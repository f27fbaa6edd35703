// Command kconfig-check lists every option the guest kernel fragments
// request that a .config lacks or sets differently, and exits 1 if there is
// any (0 with --report).
//
//	kconfig-check [--arch x86_64] [--fragments guest-kernel-config] [--report] [--merged] .config
//
// --merged prints the merged fragments (a KCONFIG_ALLCONFIG file) instead.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/wren-vm/wren/guest-kernel-config/kconfig"
)

func main() {
	code, err := run(os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kconfig-check: %v\n", err)
	}
	os.Exit(code)
}

func run(args []string, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("kconfig-check", flag.ContinueOnError)
	arch := fs.String("arch", "x86_64", "architecture fragments to add to common/")
	dir := fs.String("fragments", "guest-kernel-config", "fragment directory")
	report := fs.Bool("report", false, "list findings but exit 0")
	merged := fs.Bool("merged", false, "print the merged fragments and exit")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	want, err := kconfig.LoadFragments(*dir, *arch)
	if err != nil {
		return 2, err
	}
	if *merged {
		return 0, kconfig.Render(stdout, want)
	}
	if fs.NArg() != 1 {
		return 2, errors.New("want exactly one .config path (make kernel-config-check KCONFIG=path)")
	}
	have, err := kconfig.ReadConfig(fs.Arg(0))
	if err != nil {
		return 2, err
	}
	findings := kconfig.Check(want, have)
	counts := map[string]int{}
	for _, f := range findings {
		fmt.Fprintln(stdout, f)
		counts[f.Kind]++
	}
	fmt.Fprintf(stdout, "%s: %d of %d requested options not satisfied (%d absent, %d module only, %d differ)\n",
		fs.Arg(0), len(findings), len(want), counts[kconfig.Absent], counts[kconfig.ModuleOnly], counts[kconfig.Differs])
	if len(findings) > 0 && !*report {
		return 1, nil
	}
	return 0, nil
}
