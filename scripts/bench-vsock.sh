#!/bin/sh
# Benchmarks wren-vsockd under a QEMU TCG guest (Debian kernel, Go /init):
# bulk throughput host->guest and guest->host over one stream, 64-byte echo
# round trip, and CONNECT/OK set-up. Results go to stdout in Go benchmark
# format; docs/benchmarks.md ("vsock (wren-vsockd)") records a run.
#   BENCHTIME=2s scripts/bench-vsock.sh
set -eu
cd "$(dirname "$0")/.."
: "${BENCHTIME:=2s}"
: "${COUNT:=1}"
exec go test -tags 'netgo osusergo seccomp' -run '^$' -bench 'BenchmarkVsock' \
	-benchtime "$BENCHTIME" -count "$COUNT" ./harness/vsockd/vmtest/
