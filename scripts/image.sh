#!/usr/bin/env bash
# Builds the guest artifacts into out/ (behind `make image`):
#   out/vmlinux                     Debian's kernel as an ELF vmlinux (QEMU -kernel, PVH boot)
#   out/wren-initramfs.cpio.gz      the agent as /init + modules + load list
#   out/wren-initramfs-debug.cpio.gz  the same plus busybox (agent.debug_console gets a shell)
#   out/wren-guest.img              Kata-layout DAX image (nvdimm, root=/dev/pmem0p1 rootflags=dax)
#   out/wren-initramfs-policy.cpio.gz  the agent with the policy engine (make agent-policy) and
#                                   its default policy: $POLICY, else Kata's allow-all
# The kernel package is fetched with apt-get download when not cached
# ($WREN_KERNEL_DIR, default /var/cache/wren/kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
GO=${GO:-go}
mkdir -p "$OUT"

make --no-print-directory agent agent-policy tools
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

echo "image: kernel"
eval "$(bin/rootfs-builder kernel | sed 's/^/kernel_/')"
install -m 0644 "$kernel_vmlinux" "$OUT/vmlinux"

echo "image: initramfs"
bin/rootfs-builder initramfs --agent bin/wren-agent --kernel-modules "$kernel_modules" --out "$OUT/wren-initramfs.cpio.gz"
bin/rootfs-builder initramfs --agent bin/wren-agent --kernel-modules "$kernel_modules" --out "$OUT/wren-initramfs-debug.cpio.gz" --profile debug
bin/rootfs-builder initramfs --agent bin/wren-agent-policy ${POLICY:+--policy "$POLICY"} --kernel-modules "$kernel_modules" --out "$OUT/wren-initramfs-policy.cpio.gz"

echo "image: DAX image"
bin/rootfs-builder image --agent bin/wren-agent --kernel-modules "$kernel_modules" --out "$OUT/wren-guest.img"

cat <<INFO
image: done (kernel $kernel_version, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)
  boot: qemu-system-x86_64 -machine q35,accel=tcg -m 512M -nographic \\
          -kernel $OUT/vmlinux -initrd $OUT/wren-initramfs.cpio.gz -append 'console=ttyS0 quiet'
  DAX image: -machine q35,nvdimm=on -m 512M,slots=2,maxmem=2G \\
          -object memory-backend-file,id=mem0,mem-path=$OUT/wren-guest.img,size=\$(stat -c %s $OUT/wren-guest.img),readonly=on,share=on \\
          -device nvdimm,id=nv0,memdev=mem0,unarmed=on   (guest: mount -o dax,ro /dev/pmem0p1)
INFO
