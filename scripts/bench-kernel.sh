#!/usr/bin/env bash
# Guest kernel benchmark (part of make bench's pod VM section): Debian's
# kernel (its modules in the initramfs) against make kernel's (everything
# built in), booted from an uncompressed initramfs without modules and from
# a DAX root image (wrenctl vm up --dax-root), boots alternating in one run,
# QEMU ${WREN_ACCEL:-tcg}, MEMORY MiB, 1 vCPU. Per boot: QEMU start → first
# Health.Check (wrenctl vm up's boot_ms), the kernel's uptime when /init
# started (the agent's first console record), and the guest's used memory
# (MemTotal − MemAvailable of /proc/meminfo, read by a container) after
# boot + sandbox + that one container (wrenctl run creates the sandbox with
# the virtio-fs share). Also the initramfs sizes, and arm64 boots of make
# kernel's arm64 Image when it is built (ARM64_BOOTS, 0 to skip).
# Prints a Markdown section; with WRITE_DOCS=1 or a DOC argument, replaces
# the "Guest kernel" section of docs/benchmarks.md (or DOC).
#   BOOTS=3 WRITE_DOCS=1 scripts/bench-kernel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BOOTS:=3}" "${ARM64_BOOTS:=2}" "${MEMORY:=512}" "${WRITE_DOCS:=0}"
doc=docs/benchmarks.md
if [ $# -ge 1 ]; then doc=$1; WRITE_DOCS=1; fi
OUT=${OUT:-out}
B="$OUT/bench-kernel"
mkdir -p "$B"
command -v jq >/dev/null || { echo "jq missing: apt-get install jq" >&2; exit 1; }

make --no-print-directory -s build kernel >/dev/null
eval "$(bin/rootfs-builder kernel | sed 's/^/kernel_/')"
bin/rootfs-builder initramfs --agent bin/wren-agent --kernel-modules "$kernel_modules" --out "$B/initramfs-debian.cpio.gz" 2>/dev/null
wren_release=$(grep -ao 'Linux version [^ ]*' out/vmlinux-wren | head -1 | cut -d' ' -f3)
scripts/busybox-bundle.sh "$B/bundle" "cat /proc/meminfo"

VMDIR="$B/vm"
down() { bin/wrenctl vm down --dir "$VMDIR" >/dev/null 2>&1 || true; }
down
trap down EXIT

# boot KERNEL [vm up args...]: one boot, one container; appends to the
# KERNEL_boot, KERNEL_init and KERNEL_used arrays.
boot() {
  local k=$1
  shift
  bin/wrenctl vm up --dir "$VMDIR" --memory "$MEMORY" "$@" >"$B/vm.env" 2>"$B/up.log" || { cat "$B/up.log" >&2; exit 1; }
  local ms init addr shared used
  ms=$(sed -n 's/^boot_ms=//p' "$B/vm.env")
  init=$(grep -ao '"uptime_ms":[0-9]*' "$VMDIR/console.log" | head -1 | cut -d: -f2)
  addr=$(sed -n 's/^addr=//p' "$B/vm.env")
  shared=$(sed -n 's/^shared_dir=//p' "$B/vm.env")
  used=$(bin/wrenctl --addr "$addr" run --shared-dir "$shared" --bundle "$B/bundle" meminfo |
    awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} END {if (t && a) printf "%.1f", (t - a) / 1024}')
  [ -n "$used" ] || { echo "bench-kernel: no /proc/meminfo from the $k guest" >&2; exit 1; }
  # The host's cost of the pod VM: the proportional set size (shared guest
  # RAM split between QEMU and the vhost-user backends that map it) of
  # every process vm up started.
  # Its idle CPU: the CPU time of those processes over IDLE_S seconds
  # with the container gone, in millicores.
  local pss=0 pid pids t0 t1 idle
  pids=$(bin/wrenctl vm status --dir "$VMDIR" | sed -n 's/^proc=.* pid=\([0-9]*\) .*/\1/p')
  for pid in $pids; do
    pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")))
  done
  pss=$(awk -v k="$pss" 'BEGIN {printf "%.1f", k / 1024}')
  ticks() { local p s=0; for p in $pids; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $s; }
  t0=$(ticks)
  sleep "${IDLE_S:-5}"
  t1=$(ticks)
  idle=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v s="${IDLE_S:-5}" 'BEGIN {printf "%d", d / hz / s * 1000}')
  eval "${k}_boot+=($ms) ${k}_init+=(${init:-0}) ${k}_used+=($used) ${k}_pss+=($pss) ${k}_idle+=($idle)"
  echo "$k boot: first Health.Check $ms ms after QEMU start; kernel uptime at /init ${init:-?} ms; used ${used} MiB; host PSS ${pss} MiB; idle ${idle} mCPU" >&2
  down
}

debian_boot=() debian_init=() debian_used=() debian_pss=() debian_idle=()
wren_boot=() wren_init=() wren_used=() wren_pss=() wren_idle=()
dax_boot=() dax_init=() dax_used=() dax_pss=() dax_idle=()
arm64_boot=() arm64_init=() arm64_used=() arm64_pss=() arm64_idle=()
for i in $(seq "$BOOTS"); do
  boot debian --kernel "$kernel_vmlinux" --initrd "$B/initramfs-debian.cpio.gz"
  boot wren --kernel out/vmlinux-wren
  cp "$VMDIR/boot/wren-initramfs-x86_64.cpio" "$B/initramfs-wren.cpio"
  boot dax --kernel out/vmlinux-wren --dax-root
  cp --sparse=always "$VMDIR/boot/wren-root-x86_64.img" "$B/root-wren.img"
done
# vm up built them for make kernel's kernel (no modules, modules.builtin).
if [ "$ARM64_BOOTS" -gt 0 ] && [ -e out/Image-wren-arm64 ]; then
  make --no-print-directory -s agent-arm64 >/dev/null
  # The container's busybox must be arm64's too: the e2e tests' cached copy.
  bb=/var/cache/wren/busybox/arm64/busybox
  if [ -x "$bb" ]; then
    cp "$bb" "$B/bundle/rootfs/bin/busybox"
    for i in $(seq "$ARM64_BOOTS"); do boot arm64 --arch arm64; done
    cp /bin/busybox "$B/bundle/rootfs/bin/busybox"
  fi
fi

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%s (%s–%s)", a[int((NR+1)/2)], a[1], a[NR]}'; }
ratio() { awk -v a="$(median "${@:2}")" -v b="$1" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }'; }
size() {
  if [ "$(head -c2 "$1" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
    awk -v s="$(stat -c %s "$1")" -v u="$(zcat "$1" | wc -c)" 'BEGIN { printf "%.1f MiB gzip (%.1f MiB unpacked)", s / 1048576, u / 1048576 }'
  else
    stat -c %s "$1" | awk '{ printf "%.1f MiB uncompressed", $1 / 1048576 }'
  fi
}
row() { # label debian-array wren-array dax-array goal
  local -n d=$2 w=$3 x=$4
  local dm
  dm=$(median "${d[@]}")
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(stats "${d[@]}")" "$(stats "${w[@]}")" "$(ratio "$dm" "${w[@]}")" \
    "$(stats "${x[@]}")" "$(ratio "$dm" "${x[@]}")" "$5"
}
arm64_row=""
if [ ${#arm64_boot[@]} -gt 0 ]; then
  arm64_row="
arm64 (make kernel's Image, $(stat -c %s out/Image-wren-arm64 | awk '{printf "%.1f MiB", $1/1048576}'), \`wrenctl vm up --arch arm64\`: QEMU's virt machine, TCG emulating
a different architecture, $ARM64_BOOTS boots): QEMU start → first Health.Check $(stats "${arm64_boot[@]}") ms,
kernel uptime at /init $(stats "${arm64_init[@]}") ms, used memory $(stats "${arm64_used[@]}") MiB."
fi
section=$(cat <<MD
## Guest kernel (scripts/bench-kernel.sh)

$(date -u +%Y-%m-%d), $(nproc) cores (load average $(cut -d' ' -f1 /proc/loadavg) at the end), QEMU ${WREN_ACCEL:-tcg}, $MEMORY MiB, 1 vCPU,
$BOOTS boots of each, alternating. Debian's $kernel_version with its modules in the initramfs (gzip, as the pod VM
has booted it so far), against make kernel's $wren_release (guest-kernel-config/, everything built in) booted from an
uncompressed initramfs without modules, and from a read-only DAX root image (\`wrenctl vm up --dax-root\`, Kata's
image mode: the agent is mapped from the host's page cache, not held in guest RAM). Every boot has the pod VM's
command line (\`quiet\`, \`noreplace-smp no_timer_check\`, and under TCG \`noapictimer init_on_alloc=1\`: docs/perf/boot.md). Median (min–max).

| measure | Debian's kernel | Wren's kernel, initramfs | ÷ Debian | Wren's kernel, DAX root | ÷ Debian | goal |
|---|---|---|---|---|---|---|
$(row "QEMU start → first Health.Check (ms)" debian_boot wren_boot dax_boot "≤ 0.3×")
$(row "kernel uptime when /init started (ms)" debian_init wren_init dax_init "")
$(row "guest used memory (MemTotal − MemAvailable) after boot + sandbox + one container (MiB)" debian_used wren_used dax_used "≤ 0.5×")
$(row "host memory of the pod VM then: PSS of QEMU, virtiofsd, wren-vsockd, log collector (MiB)" debian_pss wren_pss dax_pss "")
$(row "host CPU of the idle pod VM after that container, over ${IDLE_S:-5} s (millicores)" debian_idle wren_idle dax_idle "")
| boot image | initramfs $(size "$B/initramfs-debian.cpio.gz") | initramfs $(size "$B/initramfs-wren.cpio") | | root image $(stat -c %s "$B/root-wren.img" | awk '{printf "%.0f MiB", $1/1048576}') ($(du -k "$B/root-wren.img" | awk '{printf "%.1f MiB", $1/1024}') allocated) | | |
| kernel booted (\`-kernel\`) | $(stat -c %s "$kernel_vmlinux" | awk '{printf "%.1f MiB", $1/1048576}') vmlinux | $(stat -c %s out/vmlinux-wren | awk '{printf "%.1f MiB", $1/1048576}') vmlinux | | the same | | |
$arm64_row
MD
)
echo "$section"
if [ "$WRITE_DOCS" = 1 ]; then
  printf '%s\n' "$section" | scripts/doc-section.sh "$doc" '## Guest kernel (scripts/bench-kernel.sh)'
  echo "wrote $doc" >&2
fi
