#!/usr/bin/env bash
# Writes a minimal OCI bundle to DIR: a busybox-static rootfs and runc's
# default config.json running `sh -c SCRIPT` without a terminal.
#   scripts/busybox-bundle.sh DIR SCRIPT
set -euo pipefail
dir=$1 script=$2
command -v runc >/dev/null || { echo "runc missing (scripts/install-deps.sh)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "/bin/busybox missing: apt-get install busybox-static" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir"/rootfs/{bin,proc,sys,dev,etc,tmp}
cp /bin/busybox "$dir/rootfs/bin/busybox"
for a in sh echo uname cat hostname true sleep; do ln -s busybox "$dir/rootfs/bin/$a"; done
(cd "$dir" && runc spec)
# JSON-escape the script for the args line.
esc=$(printf '%s' "$script" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
sed -i \
  -e 's/"terminal": true/"terminal": false/' \
  -e "s|^\(\s*\)\"sh\"$|\1\"sh\", \"-c\", \"$esc\"|" \
  "$dir/config.json"
grep -q '"-c"' "$dir/config.json" || { echo "busybox-bundle: could not set the command in config.json" >&2; exit 1; }
