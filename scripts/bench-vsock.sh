#!/bin/sh
# Benchmarks wren-vsockd under a QEMU TCG guest (Debian kernel, Go /init):
# bulk throughput host->guest and guest->host over one stream, 64-byte echo
# round trip, and CONNECT/OK set-up. Results go to stdout in Go benchmark
# format; given DOC.md (as make bench calls it), the run also replaces the
# "vsock (wren-vsockd) — latest run" section of DOC.md.
#   BENCHTIME=2s scripts/bench-vsock.sh [DOC.md]
set -eu
cd "$(dirname "$0")/.."
: "${BENCHTIME:=2s}"
: "${COUNT:=1}"
out=$(go test -tags 'netgo osusergo seccomp' -run '^$' -bench 'BenchmarkVsock' \
	-benchtime "$BENCHTIME" -count "$COUNT" ./vsockd/vmtest/)
echo "$out"
[ $# -ge 1 ] || exit 0
doc=$1
section=$(printf '## vsock (wren-vsockd) — latest run\n\n%s, benchtime %s, count %s (BenchmarkVsock in vsockd/vmtest: one TCG guest, one stream per figure):\n\n```\n%s\n```\n' \
	"$(date -u +%Y-%m-%d)" "$BENCHTIME" "$COUNT" "$(echo "$out" | grep -E '^(Benchmark|goos|goarch|cpu)')")
printf '%s\n' "$section" | scripts/doc-section.sh "$doc" '## vsock (wren-vsockd) — latest run'
