#!/bin/sh
# Runs every fuzz target of the repository for FUZZTIME each (default 30s)
# and records the executions per target in docs/reliability/fuzz.tsv, from
# which scripts/reliability-report.sh regenerates docs/reliability.md.
# Usage: make fuzz FUZZTIME=1m   (or FUZZTIME=... scripts/fuzz.sh [pkg-pattern])
set -eu
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-30s}
# Minimising a new input re-runs it up to this many times (Go's default,
# 60s, would eat a short run of the slow agent API target).
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-1x}
GO=${GO:-go}
TAGS='netgo osusergo seccomp'
out=docs/reliability/fuzz.tsv
mkdir -p docs/reliability
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT
tmp=$logdir/fuzz.tsv
printf 'package\ttarget\tfuzztime\texecs\tnew_interesting\tresult\n' >"$tmp"
failed=0
# Every `func FuzzXxx(f *testing.F)` in a _test.go file.
grep -rl --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*(f \*testing.F)' . | sort | while read -r file; do
	pkg=./$(dirname "${file#./}")
	case "$pkg" in *"${1:-}"*) ;; *) continue ;; esac
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(f \*testing.F).*/\1/p' "$file"); do
		log=$logdir/$(echo "$pkg.$target" | tr '/' '_').log
		echo "fuzz $pkg $target for $FUZZTIME"
		if CGO_ENABLED=1 $GO test -tags "$TAGS" -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" "$pkg" >"$log" 2>&1; then
			result=pass
		elif ! grep -q 'Failing input written' "$log" && grep -q '^    context deadline exceeded' "$log"; then
			# The coordinator's deadline passed while a worker was in the
			# middle of a slow input (the agent API target): no failure.
			result=pass
		else
			result=FAIL
			tail -n 40 "$log"
		fi
		# The last progress line carries the totals.
		line=$(grep 'fuzz: elapsed:.*execs:' "$log" | tail -n 1 || true)
		execs=$(echo "$line" | sed -n 's/.*execs: \([0-9]*\).*/\1/p')
		new=$(echo "$line" | sed -n 's/.*new interesting: \([0-9]*\).*/\1/p')
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$pkg" "$target" "$FUZZTIME" "${execs:-0}" "${new:-0}" "$result" >>"$tmp"
		echo "  execs ${execs:-0}, new interesting ${new:-0}: $result"
	done
done
if [ -n "${1:-}" ] && [ -f "$out" ]; then
	# A partial run keeps the other targets' last figures.
	{ cat "$tmp"; tail -n +2 "$out" | awk -F'\t' -v f="$1" 'index($1, f) == 0'; } >"$tmp.all"
	mv "$tmp.all" "$tmp"
fi
cp "$tmp" "$out"
if grep -q 'FAIL$' "$out"; then failed=1; fi
scripts/reliability-report.sh --no-tests
exit $failed
