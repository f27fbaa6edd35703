#!/usr/bin/env bash
# make kernel-config-check KCONFIG=path: lists every option the fragments
# request that the .config lacks or sets differently; exits non-zero if any.
# ARCH=arm64 checks the arm64 set; REPORT=1 only reports.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${1:-}" ]; then
  echo "usage: make kernel-config-check KCONFIG=path/to/.config [ARCH=x86_64|arm64] [REPORT=1]" >&2
  exit 2
fi
args=(--arch "${ARCH:-x86_64}" --fragments guest-kernel-config)
[ -n "${REPORT:-}" ] && args+=(--report)
exec "${GO:-go}" run ./guest-kernel-config/cmd/kconfig-check "${args[@]}" "$1"
