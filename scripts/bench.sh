#!/bin/sh
# make bench: measures the agent and its peers (runc, crun, a raw unix
# socket) in one run and writes docs/benchmarks.md and docs/benchmarks.json.
#
#   BENCH_QUICK=10 scripts/bench.sh    # every count divided by 10
#   BENCH_ONLY=4,5 scripts/bench.sh    # some figures only (add vsock, vm for those sections)
#   BENCH_OUT=/tmp/b scripts/bench.sh  # write elsewhere than docs/
#   BENCH_BASELINE=old/wren-agent scripts/bench.sh  # before/after rows
#
# crun refuses a hybrid cgroup layout (v1 controllers plus a cgroup2 mount),
# so on such a host the whole run (agent and peers alike) happens in a
# private mount namespace with the cgroup2 mount removed. Nothing outside
# that namespace changes.
set -eu
cd "$(dirname "$0")/.."

GO=${GO:-go}
OUT=${BENCH_OUT:-docs}
mkdir -p "$OUT" bin

# Peers: Debian's runc and crun. Install them when missing; a peer that
# cannot be installed is reported as skipped with the reason.
missing=""
for p in runc crun busybox hyperfine jq; do
	command -v "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	pkgs=$(echo "$missing" | sed 's/busybox/busybox-static/')
	echo "bench: installing$pkgs"
	if [ "$(id -u)" = 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs >/dev/null ||
			echo "bench: could not install$pkgs; those peers will be reported as skipped"
	else
		echo "bench: not root; cannot install$pkgs"
	fi
fi

[ -x bin/wren-agent ] || make -s agent
[ -x bin/wren-agent-policy ] || make -s agent-policy
$GO build -trimpath -o bin/wren-bench ./harness/cmd/wren-bench

set -- -agent bin/wren-agent -policy-agent bin/wren-agent-policy -json "$OUT/benchmarks.json" -md "$OUT/benchmarks.md"
[ -n "${BENCH_QUICK:-}" ] && set -- "$@" -quick "$BENCH_QUICK"
[ -n "${BENCH_ONLY:-}" ] && set -- "$@" -only "$BENCH_ONLY"
# BENCH_BASELINE=path/to/older/wren-agent adds "wren (before)" rows to
# figures 1, 4, 5, 6 and 7; BENCH_BASELINE_NAME says what it is.
[ -n "${BENCH_BASELINE:-}" ] && set -- "$@" -baseline-agent "$BENCH_BASELINE" -baseline-name "${BENCH_BASELINE_NAME:-baseline}"

host_mode=v1
if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
	host_mode=v2
elif [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
	host_mode=hybrid
fi
export WREN_BENCH_HOST_CGROUP_MODE=$host_mode

if [ "$host_mode" = hybrid ] && [ "$(id -u)" = 0 ]; then
	export WREN_BENCH_PRIVATE_MOUNT_NS=1
	unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh bin/wren-bench run "$@"
else
	bin/wren-bench run "$@"
fi

# Sections measured by other parts of the project append themselves. With
# BENCH_ONLY they run only when named: BENCH_ONLY=4,vsock,vm,template.
for extra in scripts/bench-vsock.sh scripts/bench-vm.sh scripts/bench-template.sh; do
	name=$(basename "$extra" .sh | sed 's/^bench-//')
	case ",${BENCH_ONLY:-$name}," in
	*",$name,"*) ;;
	*) continue ;;
	esac
	if [ -x "$extra" ]; then
		echo "bench: $extra"
		"$extra" "$OUT/benchmarks.md" "$OUT/benchmarks.json" || echo "bench: $extra failed (exit $?)" >&2
	fi
done
echo "bench: wrote $OUT/benchmarks.md and $OUT/benchmarks.json"
