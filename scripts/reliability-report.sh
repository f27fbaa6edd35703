#!/bin/sh
# Regenerates docs/reliability.md. Without arguments it runs the
# reliability tests (agent API fuzz seeds, fsremove, harness/reliability)
# and records their figures; with --no-tests it only re-renders from the
# recorded TSVs (scripts/fuzz.sh uses that after a fuzz run).
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
if [ "${1:-}" = "--no-tests" ]; then
	exec $GO run ./scripts/reliability-report
fi
[ -n "${WREN_BIN:-}" ] || { make -s build >/dev/null; WREN_BIN=$PWD/bin; export WREN_BIN; }
json=$(mktemp)
trap 'rm -f "$json"' EXIT
status=0
CGO_ENABLED=1 $GO test -json -tags 'netgo osusergo seccomp' -count=1 -timeout 20m \
	./lib/fsremove/ ./agent/apifuzz/ ./harness/reliability/ >"$json" || status=$?
# Bad values checked where a real call would change the machine (the clock).
CGO_ENABLED=1 $GO test -json -tags 'netgo osusergo seccomp' -count=1 ./agent/rpc/ \
	-run 'TestSetGuestDateTimeRange' >>"$json" || status=$?
# The containment checks that need the pod VM (a QEMU TCG boot).
CGO_ENABLED=1 $GO test -json -tags 'netgo osusergo seccomp' -count=1 -timeout 20m ./harness/e2e/ \
	-run 'TestAgentThreadsInPodVM|TestPodVM/^(CreateSandbox|KataShapedPIDNamespace|ContainerCannotReachAgent)$' >>"$json" || status=$?
$GO run ./scripts/reliability-report -tests "$json"
echo "wrote docs/reliability.md"
exit $status
