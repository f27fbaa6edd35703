#!/usr/bin/env bash
# `make run`: the first thing to try. Boots a pod VM (QEMU, Debian's kernel,
# the Wren agent as PID 1 in an initramfs), runs a busybox container in it
# through the agent API over hybrid vsock, the way a Kata shim would, and
# shuts the VM down again. Installs what is missing on the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
RUN="$OUT/run"
VMDIR="$RUN/vm"
start=$(date +%s%N)
step() { local ms=$((($(date +%s%N) - start) / 1000000)); printf '\n==> [%3d.%ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "make run needs root (QEMU memfd backends, virtiofsd, apt-get on the first run)" >&2
  exit 1
fi

step "installing missing packages (scripts/install-deps.sh)"
scripts/install-deps.sh

step "building wren-agent, wrenctl, wren-vsockd, rootfs-builder"
make --no-print-directory -s build

step "fetching Debian's kernel (cached in \${WREN_KERNEL_DIR:-/var/cache/wren/kernel})"
eval "$(bin/rootfs-builder kernel | sed 's/^/kernel_/')"
echo "kernel $kernel_version"

step "building the initramfs (agent as /init + virtio, vsock, virtio-fs modules)"
mkdir -p "$OUT"
bin/rootfs-builder initramfs --agent bin/wren-agent --kernel-modules "$kernel_modules" --out "$OUT/wren-initramfs.cpio.gz"

step "making a busybox bundle"
greeting='Hello from a container in a Wren pod VM!'
scripts/busybox-bundle.sh "$RUN/bundle" "echo '$greeting'; echo guest kernel: \$(uname -r)"

# Whatever happens from here on, the VM goes away again.
bin/wrenctl vm down --dir "$VMDIR" >/dev/null 2>&1 || true
trap 'bin/wrenctl vm down --dir "$VMDIR" >/dev/null 2>&1 || true' EXIT

step "booting the pod VM (wren-vsockd, virtiofsd, QEMU ${WREN_ACCEL:-tcg})"
bin/wrenctl vm up --dir "$VMDIR" --kernel "$kernel_vmlinux" --initrd "$OUT/wren-initramfs.cpio.gz" > "$RUN/vm.env"
cat "$RUN/vm.env"
addr=$(sed -n 's/^addr=//p' "$RUN/vm.env")
shared=$(sed -n 's/^shared_dir=//p' "$RUN/vm.env")

step "running the container through the agent (wrenctl run --shared-dir)"
bin/wrenctl --addr "$addr" run --shared-dir "$shared" --bundle "$RUN/bundle" hello | tee "$RUN/output.txt"
grep -q "guest kernel: $kernel_version" "$RUN/output.txt" || { echo "the container did not report the guest kernel $kernel_version" >&2; exit 1; }

step "shutting the VM down"
bin/wrenctl vm down --dir "$VMDIR"
trap - EXIT
step "done: the container ran inside the VM (host kernel $(uname -r), guest kernel $kernel_version)"
