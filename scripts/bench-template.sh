#!/usr/bin/env bash
# VM template benchmark (QEMU ${WREN_ACCEL:-tcg}), cold boots and clones side
# by side in one run: N cold pod VMs (`wrenctl vm up`) and N clones of one
# template (`wrenctl vm template create`, `wrenctl vm up --template`), all
# running at once, each having run one container (/bin/true through its
# virtio-fs share). Reports QEMU start → first Health.Check for each kind,
# and their host memory: the QEMU processes' PSS, and the whole VM (QEMU,
# wren-vsockd and virtiofsd PSS without their shared-memory part, plus the
# guest RAM file's resident pages counted once). Prints a Markdown section
# and, with WRITE_DOCS=1, replaces the "Pod VM templates" section of
# docs/benchmarks.md.
#   N=4 WRITE_DOCS=1 scripts/bench-template.sh
#   scripts/bench-template.sh DOC.md     (as make bench calls it)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${N:=4}" "${WRITE_DOCS:=0}" "${MEMORY:=512}"
doc=docs/benchmarks.md
if [ $# -ge 1 ]; then doc=$1; WRITE_DOCS=1; fi
OUT=${OUT:-out}
B="$(realpath -m "$OUT/bench-template")"
mkdir -p "$B"

make --no-print-directory -s build >/dev/null
eval "$(bin/rootfs-builder kernel | sed 's/^/kernel_/')"
bin/rootfs-builder initramfs --agent bin/wren-agent --kernel-modules "$kernel_modules" --out "$B/initramfs.cpio.gz" >/dev/null
scripts/busybox-bundle.sh "$B/bundle" "true"

dirs=()
down() { for d in "${dirs[@]}"; do bin/wrenctl vm down --dir "$d" >/dev/null 2>&1 || true; done; }
trap down EXIT

# up KIND I ARGS...: starts a VM in $B/KIND-I, runs /bin/true in it and
# prints its boot_ms (and, for a clone, clone_prepare_ms after a space).
up() {
  local d="$B/$1-$2"; shift 2
  dirs+=("$d")
  bin/wrenctl vm down --dir "$d" >/dev/null 2>&1 || true
  bin/wrenctl vm up --dir "$d" --memory "$MEMORY" "$@" >"$d.env" 2>"$d.log" || { cat "$d.log" >&2; exit 1; }
  local addr shared
  addr=$(sed -n 's/^addr=//p' "$d.env") shared=$(sed -n 's/^shared_dir=//p' "$d.env")
  bin/wrenctl --addr "$addr" run --shared-dir "$shared" --bundle "$B/bundle" true >/dev/null
}

# kib PID FIELD: a field of /proc/PID/smaps_rollup in KiB.
kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/smaps_rollup"; }
# vmmem DIR: "QEMU_PSS_KIB WHOLE_VM_KIB" for the VM in DIR.
vmmem() {
  local qemu total=0 pid ram=0 fd
  qemu=$(jq -r '.procs[] | select(.name=="qemu") | .pid' "$1/vm.json")
  for pid in $(jq -r '.procs[] | select(.name=="qemu" or .name=="wren-vsockd" or .name=="virtiofsd") | .pid' "$1/vm.json"); do
    total=$((total + $(kib "$pid" Pss) - $(kib "$pid" Pss_Shmem)))
  done
  # The guest RAM is a memfd of QEMU's (cold: memory-backend-memfd; clone:
  # the copy of the template's memory): its resident pages, once.
  for fd in /proc/"$qemu"/fd/*; do
    case "$(readlink "$fd")" in
    /memfd:memory-backend-memfd*|/memfd:wren-clone-ram*) ram=$((ram + $(stat -L -c %b "$fd") / 2)) ;;
    esac
  done
  echo "$(kib "$qemu" Pss) $((total + ram))"
}

cold_boot=() clone_boot=() clone_prep=()
for i in $(seq "$N"); do
  up cold "$i" --kernel "$kernel_vmlinux" --initrd "$B/initramfs.cpio.gz"
  cold_boot+=("$(sed -n 's/^boot_ms=//p' "$B/cold-$i.env")")
  echo "cold $i: first Health.Check ${cold_boot[-1]} ms after QEMU start" >&2
done
T="$B/template"
bin/wrenctl vm template create --dir "$T" --memory "$MEMORY" --kernel "$kernel_vmlinux" --initrd "$B/initramfs.cpio.gz" >"$B/template.env" 2>"$B/template.log" ||
  { cat "$B/template.log" >&2; exit 1; }
for i in $(seq "$N"); do
  up clone "$i" --template "$T" --cid $((100 + i))
  clone_boot+=("$(sed -n 's/^boot_ms=//p' "$B/clone-$i.env")")
  clone_prep+=("$(sed -n 's/^clone_prepare_ms=//p' "$B/clone-$i.env")")
  echo "clone $i: first Health.Check ${clone_boot[-1]} ms after QEMU start (memory copy and checks before it: ${clone_prep[-1]} ms)" >&2
done
sleep 2 # let the last run's teardown settle
cq=0 cw=0 kq=0 kw=0
for i in $(seq "$N"); do
  read -r q w < <(vmmem "$B/cold-$i"); cq=$((cq + q)) cw=$((cw + w))
  read -r q w < <(vmmem "$B/clone-$i"); kq=$((kq + q)) kw=$((kw + w))
done
tmem=$(du -k "$T/mem" | cut -f1)
down

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "median %d ms (min %d, max %d, n=%d)", a[int((NR+1)/2)], a[1], a[NR], NR}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }
cb=$(median "${cold_boot[@]}") kb=$(median "${clone_boot[@]}") kp=$(median "${clone_prep[@]}")
section=$(cat <<MD
## Pod VM templates (scripts/bench-template.sh)

$(date -u +%Y-%m-%d), $(nproc) cores (load average $(cut -d' ' -f1 /proc/loadavg) at the end), QEMU ${WREN_ACCEL:-tcg}, $MEMORY MiB, 1 vCPU,
Debian kernel $kernel_version. $N cold VMs and $N clones of one template, all running at once, each after one
\`wrenctl run\` of /bin/true through its virtio-fs share. Design and caveats: docs/templates.md.

| measure | cold boot | clone | clone / cold (goal) |
|---|---|---|---|
| QEMU start → first Health.Check | $(stats "${cold_boot[@]}") | $(stats "${clone_boot[@]}") | **$(ratio "$kb" "$cb")×** (≤ 0.25×) |
| the same plus the clone's checks and memory copy before QEMU starts | – | median $((kb + kp)) ms (copy and checks median $kp ms) | $(ratio $((kb + kp)) "$cb")× |
| sum of the $N QEMU processes' PSS | $(mib $cq) | $(mib $kq) | $(ratio "$kq" "$cq")× (≤ 0.5×) |
| sum of the $N whole VMs (QEMU + wren-vsockd + virtiofsd PSS without shared memory, plus guest RAM resident once) | $(mib $cw) | $(mib $kw) | **$(ratio "$kw" "$cw")×** (≤ 0.5×) |

The template's memory file (read by every clone start, kept in the host's page cache) holds $(mib "$tmem") on disk, not
counted above.
MD
)
echo "$section"
if [ "$WRITE_DOCS" = 1 ]; then
  printf '%s\n' "$section" | scripts/doc-section.sh "$doc" '## Pod VM templates (scripts/bench-template.sh)'
  echo "wrote $doc" >&2
fi
