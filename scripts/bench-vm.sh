#!/usr/bin/env bash
# Pod VM benchmarks (QEMU ${WREN_ACCEL:-tcg}): for BOOTS boots, the time from
# QEMU's start to the agent's first Health.Check answer and the agent's own
# init time (init_ms of its "listening" record: process start, i.e. kernel
# boot included, to listening); then `wrenctl run` of /bin/true through the
# VM (hyperfine); then container stdout throughput, a container writing
# STDOUT_MIB to its stdout read by `wrenctl run` with ReadStdout calls and
# with passfd streams (--passfd), in the same VM and the same run. Prints a
# Markdown section and, with WRITE_DOCS=1, replaces the "Pod VM" section of
# docs/benchmarks.md. Then scripts/bench-kernel.sh (KERNEL_BENCH=0 skips it).
#   BOOTS=3 RUNS=10 STDOUT_MIB=128 WRITE_DOCS=1 scripts/bench-vm.sh
#   scripts/bench-vm.sh DOC.md     (as make bench calls it: writes into DOC.md)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BOOTS:=3}" "${RUNS:=10}" "${STDOUT_MIB:=128}" "${WRITE_DOCS:=0}"
doc=docs/benchmarks.md
if [ $# -ge 1 ]; then doc=$1; WRITE_DOCS=1; fi
OUT=${OUT:-out}
B="$OUT/bench-vm"
mkdir -p "$B"
command -v hyperfine >/dev/null || { echo "hyperfine missing: apt-get install hyperfine" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq missing: apt-get install jq" >&2; exit 1; }

make --no-print-directory -s build >/dev/null
eval "$(bin/rootfs-builder kernel | sed 's/^/kernel_/')"
bin/rootfs-builder initramfs --agent bin/wren-agent --kernel-modules "$kernel_modules" --out "$B/initramfs.cpio.gz" >/dev/null
scripts/busybox-bundle.sh "$B/bundle" "true"
scripts/busybox-bundle.sh "$B/bundle-out" "busybox dd if=/dev/zero bs=1048576 count=$STDOUT_MIB 2>/dev/null"

VMDIR="$B/vm"
down() { bin/wrenctl vm down --dir "$VMDIR" >/dev/null 2>&1 || true; }
down
trap down EXIT

boots=() inits=() kernels=()
for i in $(seq "$BOOTS"); do
  bin/wrenctl vm up --dir "$VMDIR" --kernel "$kernel_vmlinux" --initrd "$B/initramfs.cpio.gz" >"$B/vm.env" 2>"$B/up.log"
  boots+=("$(sed -n 's/^boot_ms=//p' "$B/vm.env")")
  # The log collector may still be writing the first records.
  for _ in $(seq 50); do grep -q '"msg":"listening"' "$VMDIR/agent.log" 2>/dev/null && break; sleep 0.1; done
  inits+=("$(grep '"msg":"listening"' "$VMDIR/agent.log" | head -1 | jq -r '.init_ms | floor')")
  # The agent as PID 1 logs the kernel's uptime when /init started.
  kernels+=("$(grep -o '"uptime_ms":[0-9]*' "$VMDIR/console.log" | head -1 | cut -d: -f2)")
  echo "boot $i: first Health.Check ${boots[-1]} ms after QEMU start; kernel uptime at /init ${kernels[-1]:-?} ms; agent init_ms ${inits[-1]}" >&2
  [ "$i" = "$BOOTS" ] || down
done
addr=$(sed -n 's/^addr=//p' "$B/vm.env")
shared=$(sed -n 's/^shared_dir=//p' "$B/vm.env")

hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$B/run.json" \
  "bin/wrenctl --addr $addr run --shared-dir $shared --bundle $B/bundle true" >&2
run_mean=$(jq '.results[0].mean * 1000 | floor' "$B/run.json")
run_sd=$(jq '.results[0].stddev * 1000 | floor' "$B/run.json")

# Stdout throughput: both readers in one hyperfine run against the same VM.
# A run's time less the /bin/true run's (the same create, start, wait and
# remove) is the time the STDOUT_MIB took to cross. Each reader first runs
# once with its output counted: a fast reader that loses bytes is no result.
want=$((STDOUT_MIB * 1048576))
for passfd in "" "--passfd 1027"; do
  # shellcheck disable=SC2086 # $passfd is empty or two words
  got=$(bin/wrenctl --addr "$addr" run --shared-dir "$shared" --bundle "$B/bundle-out" $passfd out | wc -c)
  [ "$got" = "$want" ] || { echo "bench-vm: run ${passfd:-with ReadStdout} delivered $got bytes of $want" >&2; exit 1; }
done
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$B/stdout.json" \
  "bin/wrenctl --addr $addr run --shared-dir $shared --bundle $B/bundle-out out" \
  "bin/wrenctl --addr $addr run --shared-dir $shared --bundle $B/bundle-out --passfd 1027 out" >&2
rate() { jq -r --argjson i "$1" --argjson base "$run_mean" --argjson mib "$STDOUT_MIB" \
  '.results[$i].mean * 1000 - $base | if . > 0 then $mib * 1048.576 / . else 0 end' "$B/stdout.json"; }
mean_ms() { jq -r --argjson i "$1" '.results[$i].mean * 1000 | floor' "$B/stdout.json"; }
readstdout_rate=$(rate 0) passfd_rate=$(rate 1)
ratio=$(awk -v a="$passfd_rate" -v b="$readstdout_rate" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
fmt() { awk -v r="$1" 'BEGIN { printf "%.1f", r }'; }
down

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1; s+=$1} END {printf "median %d ms (min %d, max %d, n=%d)", a[int((NR+1)/2)], a[1], a[NR], NR}'; }
section=$(cat <<MD
## Pod VM (scripts/bench-vm.sh)

$(date -u +%Y-%m-%d), $(nproc) cores (load average $(cut -d' ' -f1 /proc/loadavg) at the end), QEMU ${WREN_ACCEL:-tcg}, 512 MiB, 1 vCPU, Debian kernel $kernel_version,
Wren initramfs (agent as /init), wren-vsockd hybrid vsock, virtiofsd.

| measure | result |
|---|---|
| QEMU start → first Health.Check answer | $(stats "${boots[@]}") |
| kernel uptime when /init started (the agent's "guest init started" record) | $(stats "${kernels[@]}") |
| agent init_ms (process start → listening; kernel boot included) | $(stats "${inits[@]}") |
| \`wrenctl run --shared-dir\` of \`/bin/true\` (copy rootfs into the share, CreateContainer, Start, Wait, Remove) | mean $run_mean ms ± $run_sd ms (hyperfine, $RUNS runs) |
| container stdout, $STDOUT_MIB MiB read with ReadStdout (\`wrenctl run\`) | $(fmt "$readstdout_rate") MB/s (run mean $(mean_ms 0) ms less the \`/bin/true\` run) |
| container stdout, $STDOUT_MIB MiB through passfd streams (\`wrenctl run --passfd 1027\`) | $(fmt "$passfd_rate") MB/s (run mean $(mean_ms 1) ms less the \`/bin/true\` run); **$ratio×** ReadStdout (goal ≥ 3×) |
MD
)
echo "$section"
if [ "$WRITE_DOCS" = 1 ]; then
  printf '%s\n' "$section" | scripts/doc-section.sh "$doc" '## Pod VM (scripts/bench-vm.sh)'
  echo "wrote $doc" >&2
fi

# Debian's kernel against make kernel's (a section of its own, this run).
if [ "${KERNEL_BENCH:-1}" = 1 ]; then
  if [ "$WRITE_DOCS" = 1 ]; then scripts/bench-kernel.sh "$doc"; else scripts/bench-kernel.sh; fi
fi
