#!/usr/bin/env bash
# make kernel: builds a minimal guest kernel from Debian's linux-source-6.1
# with the fragments here merged onto an allnoconfig base (as Kata's
# build-kernel.sh does with merge_config.sh -n), checks that every requested
# option made it into the final .config, and builds vmlinux and bzImage.
#
# Output: out/vmlinux-wren, out/bzImage-wren, out/config-wren.
# Work tree: $KERNEL_BUILD_DIR (default /var/cache/wren/kernel-build).
# Needs: gcc make flex bison bc perl libelf-dev (objtool) xz-utils.
# Time on this machine (2 cores, shared): see guest-kernel-config/README.md.
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ARCH=${ARCH:-x86_64}
WORK=${KERNEL_BUILD_DIR:-/var/cache/wren/kernel-build}
OUT=${OUT:-$ROOT/out}
JOBS=${JOBS:-$(nproc)}
GO=${GO:-go}

missing=()
for c in gcc make flex bison bc perl xz; do command -v "$c" >/dev/null || missing+=("$c"); done
[ -e /usr/include/gelf.h ] || missing+=(libelf-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "make kernel: missing ${missing[*]}; install with: apt-get install flex bison bc libelf-dev xz-utils gcc make" >&2
  exit 1
fi

mkdir -p "$WORK" "$OUT"
src=$(ls -d "$WORK"/linux-source-6.1 2>/dev/null || true)
if [ -z "$src" ]; then
  echo "kernel: apt-get download linux-source-6.1"
  (cd "$WORK" && apt-get download -q linux-source-6.1)
  deb=$(ls "$WORK"/linux-source-6.1_*.deb | head -1)
  dpkg-deb -x "$deb" "$WORK/pkg"
  echo "kernel: unpacking $(ls "$WORK"/pkg/usr/src/linux-source-6.1.tar.xz)"
  tar -C "$WORK" -xf "$WORK"/pkg/usr/src/linux-source-6.1.tar.xz
  rm -rf "$WORK/pkg" "$deb"
  src=$WORK/linux-source-6.1
fi

karch=$ARCH
[ "$ARCH" = arm64 ] || karch=x86_64
"$GO" run ./guest-kernel-config/cmd/kconfig-check --arch "$ARCH" --fragments guest-kernel-config --merged > "$WORK/merged.config"
export KBUILD_BUILD_USER=wren KBUILD_BUILD_HOST=wren KBUILD_BUILD_TIMESTAMP="${SOURCE_DATE_EPOCH:+@$SOURCE_DATE_EPOCH}"
[ -n "$KBUILD_BUILD_TIMESTAMP" ] || unset KBUILD_BUILD_TIMESTAMP
echo "kernel: allnoconfig + $(grep -c . "$WORK/merged.config") requested options"
make -s -C "$src" ARCH="$karch" KCONFIG_ALLCONFIG="$WORK/merged.config" allnoconfig
# Kata fails the build when a requested option did not survive kconfig
# (a typo or an unmet dependency); so do we, naming each one.
"$GO" run ./guest-kernel-config/cmd/kconfig-check --arch "$ARCH" --fragments guest-kernel-config "$src/.config"

start=$(date +%s)
echo "kernel: building with $JOBS jobs"
targets="vmlinux"
[ "$ARCH" = x86_64 ] && targets="vmlinux bzImage"
make -s -C "$src" ARCH="$karch" -j"$JOBS" $targets
echo "kernel: built in $(( $(date +%s) - start )) s"
cp "$src/vmlinux" "$OUT/vmlinux-wren"
[ "$ARCH" = x86_64 ] && cp "$src/arch/x86/boot/bzImage" "$OUT/bzImage-wren"
cp "$src/.config" "$OUT/config-wren"
ls -la "$OUT"/*-wren
