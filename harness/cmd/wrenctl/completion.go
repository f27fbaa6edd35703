package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// completionCommand is `wrenctl completion bash`: a completion script
// generated from the same tables help uses, so it never lists a command,
// verb, flag or RPC that wrenctl does not have.
func completionCommand(_ globals, args []string) int {
	if len(args) == 1 && isHelpFlag(args[0]) {
		commandUsage(os.Stdout, findCommand("completion"))
		return exitOK
	}
	if len(args) != 1 || args[0] != "bash" {
		return usageError(os.Stderr, "completion: want 'wrenctl completion bash' (the one shell supported)")
	}
	bashCompletion(os.Stdout)
	return exitOK
}

// flagWords lists a flag set's flags as --name words.
func flagWords(define func(fs *flag.FlagSet)) string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	if define != nil {
		define(fs)
	}
	var w []string
	fs.VisitAll(func(f *flag.Flag) { w = append(w, "--"+f.Name) })
	return strings.Join(append(w, "--help"), " ")
}

// valueFlags are the flags that take a value, so the word after one is not
// a command; pathFlags complete file names.
func valueFlags() (values, paths []string) {
	seen := map[string]bool{}
	add := func(define func(fs *flag.FlagSet)) {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		define(fs)
		fs.VisitAll(func(f *flag.Flag) {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); (ok && b.IsBoolFlag()) || seen[f.Name] {
				return
			}
			seen[f.Name] = true
			values = append(values, "--"+f.Name)
			switch f.Name {
			case "bundle", "dir", "shared-dir", "kernel", "initrd", "image", "firmware", "cwd":
				paths = append(paths, "--"+f.Name)
			}
		})
	}
	add(func(fs *flag.FlagSet) { globalFlags(fs, &globals{}) })
	for _, c := range commands {
		if c.flags != nil {
			add(c.flags)
		}
	}
	add(func(fs *flag.FlagSet) { vmDirFlag(fs) })
	for _, v := range vmVerbs {
		if v.flags != nil {
			add(v.flags)
		}
	}
	sort.Strings(values)
	sort.Strings(paths)
	return values, paths
}

func bashCompletion(w io.Writer) {
	var cmds, verbs, rpcs []string
	for _, c := range commands {
		cmds = append(cmds, c.name)
	}
	for _, v := range vmVerbs {
		verbs = append(verbs, v.name)
	}
	for _, svc := range services {
		for i := 0; i < svc.Methods().Len(); i++ {
			rpcs = append(rpcs, string(svc.Methods().Get(i).Name()))
		}
	}
	sort.Strings(rpcs)
	values, paths := valueFlags()

	fmt.Fprintf(w, `# bash completion for wrenctl; load it with: source <(wrenctl completion bash)
_wrenctl() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	local i cmd= sub=
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		%s) ((i++)) ;;
		-*) ;;
		*) if [ -z "$cmd" ]; then cmd=${COMP_WORDS[i]}; elif [ -z "$sub" ]; then sub=${COMP_WORDS[i]}; fi ;;
		esac
	done
	case $prev in
	%s) COMPREPLY=($(compgen -f -- "$cur")); return ;;
	%s) COMPREPLY=(); return ;;
	esac
	local words
	case $cmd in
	'') if [[ $cur == -* ]]; then words=%q; else words=%q; fi ;;
	describe) [[ $cur == -* ]] && words=%q || { [ -z "$sub" ] && words=%q; } ;;
	help) [ -z "$sub" ] && words=%q ;;
	completion) [ -z "$sub" ] && words=bash ;;
	vm)
		if [ -z "$sub" ]; then words=%q
		else case $sub in
`, strings.Join(values, "|"), strings.Join(paths, "|"), strings.Join(values, "|"),
		flagWords(func(fs *flag.FlagSet) { globalFlags(fs, &globals{}) }), strings.Join(append(cmds, rpcs...), " "),
		flagWords(describeFlags), strings.Join(rpcs, " "),
		strings.Join(append(cmds, rpcs...), " "),
		strings.Join(verbs, " "))
	for _, v := range vmVerbs {
		v := v
		fmt.Fprintf(w, "\t\t\t%s) words=%q ;;\n", v.name, flagWords(func(fs *flag.FlagSet) {
			vmDirFlag(fs)
			if v.flags != nil {
				v.flags(fs)
			}
		}))
	}
	fmt.Fprint(w, "\t\t\tesac\n\t\tfi ;;\n")
	for _, c := range commands {
		if c.flags != nil && c.name != "describe" {
			fmt.Fprintf(w, "\t%s) [[ $cur == -* ]] && words=%q ;;\n", c.name, flagWords(c.flags))
		}
	}
	fmt.Fprint(w, `	*) [[ $cur == -* ]] && words=--help ;;
	esac
	COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _wrenctl wrenctl
`)
}
