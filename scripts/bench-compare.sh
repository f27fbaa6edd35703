#!/bin/sh
# make bench-compare OLD=a.json NEW=b.json: prints new/old ratios of the
# medians of every metric the two runs share.
set -eu
cd "$(dirname "$0")/.."
if [ -z "${1:-}" ] || [ -z "${2:-}" ]; then
	echo "usage: make bench-compare OLD=old/benchmarks.json NEW=docs/benchmarks.json" >&2
	exit 2
fi
mkdir -p bin
${GO:-go} build -trimpath -o bin/wren-bench ./harness/cmd/wren-bench
exec bin/wren-bench compare "$1" "$2"
