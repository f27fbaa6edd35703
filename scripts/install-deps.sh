#!/usr/bin/env bash
# Installs the Debian packages Wren's make targets need. Idempotent and
# quick: it looks for one command or file per package and calls apt-get only
# when something is missing, printing each package as it is set up.
#
#   scripts/install-deps.sh [--check] [GROUP...]
#
# Groups: base (the default: build, test, run, image, bench), kernel
# (what `make kernel` needs) and arm64 (the arm64 guest: cross compiler,
# libseccomp for arm64 through Debian's multiarch, QEMU's aarch64 system
# emulator; make kernel, agent-arm64 and test). --check installs nothing:
# it lists the missing packages, one a line, and exits 1 if there are any.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# "command-or-file package" pairs, per group, in the order they are reported
base=(
  "protoc protobuf-compiler"
  "/usr/include/google/protobuf/empty.proto libprotobuf-dev"
  "qemu-system-x86_64 qemu-system-x86"
  "/bin/busybox busybox-static"
  "runc runc"
  "crun crun"
  "/usr/lib/x86_64-linux-gnu/libseccomp.a libseccomp-dev"
  "file file"
  "cpio cpio"
  "xz xz-utils"
  "apt-get apt"
  "dpkg-deb dpkg"
  "mke2fs e2fsprogs"
  "ip iproute2"
  "iptables-save iptables"
  "losetup mount"
  "unshare util-linux"
  "/usr/lib/qemu/virtiofsd qemu-system-common"
  "gcc gcc"
  "pkg-config pkg-config"
  "make make"
  "git git"
)
# guest-kernel-config/build.sh: Kbuild, objtool (libelf) and the source's xz.
kernel=(
  "flex flex"
  "bison bison"
  "bc bc"
  "perl perl"
  "/usr/include/gelf.h libelf-dev"
  "xz xz-utils"
  "gcc gcc"
  "make make"
  "apt-get apt"
  "dpkg-deb dpkg"
)
# The arm64 guest: the static agent is cross-built with cgo against
# libseccomp's arm64 archive; the kernel with the same cross compiler.
arm64=(
  "aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu"
  "/usr/lib/aarch64-linux-gnu/libseccomp.a libseccomp-dev:arm64"
  "qemu-system-aarch64 qemu-system-arm"
  "/usr/lib/qemu/virtiofsd qemu-system-common"
)

check=false
groups=()
for a in "$@"; do
  case $a in
  --check) check=true ;;
  base | kernel | arm64) groups+=("$a") ;;
  -h | --help)
    sed -n '2,10s/^# \{0,1\}//p' "$0"
    exit 0
    ;;
  *)
    echo "install-deps: unknown argument $a (want --check, base, kernel or arm64)" >&2
    exit 2
    ;;
  esac
done
[ ${#groups[@]} -gt 0 ] || groups=(base)

# missing lists each absent package once, in a stable order.
declare -A seen=()
missing=()
for g in "${groups[@]}"; do
  declare -n want=$g
  for pair in "${want[@]}"; do
    k=${pair% *} p=${pair#* }
    if [[ $k == /* ]]; then [ -e "$k" ] && continue; else command -v "$k" >/dev/null 2>&1 && continue; fi
    [ -n "${seen[$p]:-}" ] && continue
    seen[$p]=1
    missing+=("$p")
  done
  unset -n want
done

if $check; then
  [ ${#missing[@]} -eq 0 ] && exit 0
  printf '%s\n' "${missing[@]}"
  exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing ${missing[*]}; as root: scripts/install-deps.sh ${groups[*]} (or apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "install-deps: installing ${#missing[@]} packages and what they need: ${missing[*]}"
# Packages of another architecture (libseccomp-dev:arm64) need it added
# to dpkg before apt's lists are fetched.
for p in "${missing[@]}"; do
  a=${p#*:}
  [ "$a" != "$p" ] || continue
  if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
    echo "install-deps: dpkg --add-architecture $a"
    dpkg --add-architecture "$a"
  fi
done
echo "install-deps: apt-get update"
apt-get update -qq
# One line per package as apt sets it up: a first run takes a minute or
# more, and apt's own -qq output says nothing until the end.
apt-get install -y --no-install-recommends "${missing[@]}" 2>&1 |
  sed -u -n -e 's/^Setting up \([^ ]*\) .*/install-deps:   set up \1/p' -e '/^E: /p'
echo "install-deps: done"
