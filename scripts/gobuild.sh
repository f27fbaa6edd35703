#!/usr/bin/env bash
# go build with progress, behind make's build targets. A cold build compiles
# a few hundred packages with no output for a minute or so on 2 cores; this
# prints a line every 40 packages compiled and the total, so the wait shows.
# A warm build compiles next to nothing and prints nothing more.
#   scripts/gobuild.sh NAME GO-BUILD-ARGS...
# Lines from go build that are not package names (errors) pass through.
set -euo pipefail
name=$1
shift
"${GO:-go}" build -v "$@" 2>&1 | awk -v name="$name" '
	/^[^ \t:]+$/ { n++; if (n % 40 == 0) { printf "  %s: %d packages compiled\n", name, n; fflush() } next }
	{ print; fflush() }
	END { if (n >= 40) printf "  %s: %d packages compiled, linked\n", name, n }
'
