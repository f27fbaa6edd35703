#!/usr/bin/env bash
# Installs the Debian packages Wren's build, tests and guest need. Idempotent:
# it only calls apt-get when something is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# command or file -> package
declare -A want=(
  [protoc]=protobuf-compiler
  [/usr/include/google/protobuf/empty.proto]=libprotobuf-dev
  [qemu-system-x86_64]=qemu-system-x86
  [/bin/busybox]=busybox-static
  [runc]=runc
  [crun]=crun
  [/usr/lib/x86_64-linux-gnu/libseccomp.a]=libseccomp-dev
  [file]=file
  [cpio]=cpio
  [xz]=xz-utils
  [apt-get]=apt
  [dpkg-deb]=dpkg
  [mke2fs]=e2fsprogs
  [ip]=iproute2
  [iptables-save]=iptables
  [losetup]=mount
  [/usr/lib/qemu/virtiofsd]=qemu-system-common
  [gcc]=gcc
  [pkg-config]=pkg-config
  [make]=make
  [git]=git
)
missing=()
for k in "${!want[@]}"; do
  if [[ $k == /* ]]; then [ -e "$k" ] && continue; else command -v "$k" >/dev/null 2>&1 && continue; fi
  missing+=("${want[$k]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
