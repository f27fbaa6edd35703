#!/bin/sh
# Installs the pinned golangci-lint into bin/tools (or $1) through the Go
# module proxy. Idempotent: it builds only when the binary is missing or is
# another version (the first build takes a few minutes; later runs are instant).
# Usage: scripts/install-golangci-lint.sh [DIR]
set -eu
cd "$(dirname "$0")/.."
VERSION=v2.15.0
GO=${GO:-go}
dir=${1:-bin/tools}
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
bin=$dir/golangci-lint
if [ -x "$bin" ] && [ "v$("$bin" version --short 2>/dev/null)" = "$VERSION" ]; then
	exit 0
fi
mkdir -p "$dir"
echo "install-golangci-lint: building golangci-lint $VERSION into $dir"
GOBIN=$dir CGO_ENABLED=0 "$GO" install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$VERSION"
