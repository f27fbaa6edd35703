#!/usr/bin/env bash
# make kernel: builds the minimal guest kernel of one architecture from
# Debian's linux-source-6.1 with the fragments here merged onto an
# allnoconfig base (as Kata's build-kernel.sh does with merge_config.sh -n),
# checks that every requested option made it into the final .config, and
# keeps the product in a cache keyed by the merged config and the source
# version: a second run with neither changed only copies it into out/.
#
#   ARCH=x86_64|arm64 guest-kernel-config/build.sh [--print-key]
#
# --print-key prints the cache key and exits. $KERNEL_FRAGMENTS is the
# fragment directory (default guest-kernel-config).
#
# Output (out/): x86_64: vmlinux-wren (ELF, PVH boot; without its symbol
# table, which the cache entry keeps), bzImage-wren,
# config-wren, modules.builtin-wren; arm64: Image-wren-arm64,
# config-wren-arm64, modules.builtin-wren-arm64.
# Cache: $KERNEL_CACHE_DIR (default /var/cache/wren/guest-kernel)/<arch>-<key>/,
# outside the repository so that a fresh clone on the same machine finds it.
# Work tree: $KERNEL_BUILD_DIR (default /var/cache/wren/kernel-build): the
# unpacked source and one object directory per architecture (kept, so a
# changed config rebuilds incrementally).
# Needs: gcc make flex bison bc perl libelf-dev (objtool) xz-utils, and for
# arm64 gcc-aarch64-linux-gnu (scripts/install-deps.sh kernel kernel-arm64).
# Time on this machine: see guest-kernel-config/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ARCH=${ARCH:-x86_64}
WORK=${KERNEL_BUILD_DIR:-/var/cache/wren/kernel-build}
CACHE=${KERNEL_CACHE_DIR:-/var/cache/wren/guest-kernel}
OUT=${OUT:-$ROOT/out}
JOBS=${JOBS:-$(nproc)}
GO=${GO:-go}
PKG=linux-source-6.1
FRAGMENTS=${KERNEL_FRAGMENTS:-guest-kernel-config}
print_key=false
[ "${1:-}" = --print-key ] && print_key=true

case $ARCH in
x86_64)
  karch=x86_64 cross="" targets="vmlinux bzImage"
  products=("vmlinux:vmlinux-wren" "arch/x86/boot/bzImage:bzImage-wren" ".config:config-wren" "modules.builtin:modules.builtin-wren")
  ;;
arm64)
  karch=arm64 cross=${CROSS_COMPILE:-aarch64-linux-gnu-} targets="Image"
  products=("arch/arm64/boot/Image:Image-wren-arm64" ".config:config-wren-arm64" "modules.builtin:modules.builtin-wren-arm64")
  ;;
*)
  echo "make kernel: unknown ARCH $ARCH (want x86_64 or arm64)" >&2
  exit 2
  ;;
esac

missing=()
for c in gcc make flex bison bc perl xz ${cross:+${cross}gcc}; do command -v "$c" >/dev/null || missing+=("$c"); done
[ -e /usr/include/gelf.h ] || missing+=(libelf-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "make kernel: missing ${missing[*]}; install with: scripts/install-deps.sh kernel kernel-arm64" >&2
  exit 1
fi
mkdir -p "$WORK" "$OUT" "$CACHE"

# The source version is the one apt would download now; without package
# lists, the one already unpacked.
src=$WORK/$PKG
have=$(cat "$src/.wren-source-version" 2>/dev/null || true)
want=$(apt-cache policy "$PKG" 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" {print $2}')
want=${want:-$have}
if [ -z "$want" ]; then
  echo "make kernel: apt knows no $PKG and none is unpacked in $WORK (apt-get update?)" >&2
  exit 1
fi

"$GO" run ./guest-kernel-config/cmd/kconfig-check --arch "$ARCH" --fragments "$FRAGMENTS" --merged > "$WORK/merged-$ARCH.config"
key=$( { echo "arch $ARCH"; echo "source $PKG $want"; cat "$WORK/merged-$ARCH.config"; } | sha256sum | cut -c1-16)
entry=$CACHE/$ARCH-$key
if $print_key; then
  echo "$key"
  exit 0
fi

install_products() {
  for p in "${products[@]}"; do
    f=${p#*:}
    # QEMU reads the whole ELF, symbol table included, before the guest
    # starts (about 25 ms of every boot for 13 MB of symbols): out/ gets
    # vmlinux without it; the cache keeps the full one for debugging.
    if [ "${p%%:*}" != vmlinux ] || ! objcopy --strip-all "$entry/$f" "$OUT/$f.tmp" 2>/dev/null; then
      cp "$entry/$f" "$OUT/$f.tmp"
    fi
    if cmp -s "$OUT/$f.tmp" "$OUT/$f"; then rm -f "$OUT/$f.tmp"; else mv -f "$OUT/$f.tmp" "$OUT/$f"; fi
  done
  echo "kernel: $ARCH $PKG $want, key $key: $(cd "$OUT" && for p in "${products[@]}"; do printf '%s ' "out/${p#*:}"; done)"
}

# An entry counts when it has its meta and every product (an entry written
# by an older build.sh with fewer products is built again).
cached=true
for p in meta "${products[@]#*:}"; do [ -e "$entry/${p#*:}" ] || cached=false; done
if $cached; then
  echo "kernel: cached in $entry"
  install_products
  exit 0
fi

if [ "$have" != "$want" ]; then
  echo "kernel: apt-get download $PKG=$want (unpacked: ${have:-none})"
  rm -rf "$src" "$WORK"/pkg "$WORK"/build-*
  (cd "$WORK" && apt-get download -q "$PKG=$want")
  deb=$(ls "$WORK"/${PKG}_*.deb | head -1)
  dpkg-deb -x "$deb" "$WORK/pkg"
  echo "kernel: unpacking $PKG.tar.xz"
  tar -C "$WORK" -xf "$WORK/pkg/usr/src/$PKG.tar.xz"
  rm -rf "$WORK/pkg" "$deb"
  echo "$want" > "$src/.wren-source-version"
fi

export KBUILD_BUILD_USER=wren KBUILD_BUILD_HOST=wren KBUILD_BUILD_TIMESTAMP="${SOURCE_DATE_EPOCH:+@$SOURCE_DATE_EPOCH}"
[ -n "$KBUILD_BUILD_TIMESTAMP" ] || unset KBUILD_BUILD_TIMESTAMP
kmake=(make -s -C "$src" O="$WORK/build-$ARCH" ARCH="$karch" ${cross:+CROSS_COMPILE=$cross})
mkdir -p "$WORK/build-$ARCH"
echo "kernel: $ARCH allnoconfig + $(grep -c . "$WORK/merged-$ARCH.config") requested options"
"${kmake[@]}" KCONFIG_ALLCONFIG="$WORK/merged-$ARCH.config" allnoconfig
# Kata fails the build when a requested option did not survive kconfig
# (a typo or an unmet dependency); so do we, naming each one.
"$GO" run ./guest-kernel-config/cmd/kconfig-check --arch "$ARCH" --fragments "$FRAGMENTS" "$WORK/build-$ARCH/.config"

start=$(date +%s)
echo "kernel: building $targets for $ARCH with $JOBS jobs"
"${kmake[@]}" -j"$JOBS" $targets
secs=$(($(date +%s) - start))
# CPU time of everything this script waited for: with the machine shared,
# the wall time says little about what a build costs.
# (times in a pipeline would run in a subshell, which has no children.)
times >"$WORK/times-$ARCH"
cpu=$(awk 'NR == 2 {
  split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$WORK/times-$ARCH")
echo "kernel: built in $secs s wall, $cpu CPU-s (children of this script)"

rm -rf "$entry.tmp"
mkdir -p "$entry.tmp"
for p in "${products[@]}"; do cp "$WORK/build-$ARCH/${p%%:*}" "$entry.tmp/${p#*:}"; done
cp "$WORK/merged-$ARCH.config" "$entry.tmp/merged.config"
printf 'arch=%s\nsource=%s %s\nkey=%s\nbuild_seconds=%s\nbuild_cpu_seconds=%s\njobs=%s\nbuilt=%s\n' \
  "$ARCH" "$PKG" "$want" "$key" "$secs" "$cpu" "$JOBS" "$(date -u +%FT%TZ)" > "$entry.tmp/meta"
rm -rf "$entry"
mv "$entry.tmp" "$entry"
install_products
