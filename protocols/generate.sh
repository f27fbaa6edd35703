#!/bin/sh
# Regenerates the Go bindings of protocols/protos. Run through `make proto`,
# which puts the pinned protoc-gen-go and protoc-gen-go-ttrpc on PATH; the
# third plugin, protoc-gen-go-ttrpcdesc, is built here from this tree.
# Output is a pure function of the .proto files, protoc and the plugin
# versions, so reruns are byte-identical and `make proto-check` can diff.
set -eu

cd "$(dirname "$0")/.."

for tool in protoc protoc-gen-go protoc-gen-go-ttrpc; do
	command -v "$tool" >/dev/null || { echo "generate.sh: $tool not on PATH (use 'make proto')" >&2; exit 1; }
done

# The project's own plugin: service descriptions for servers other than
# *ttrpc.Server (protocols/cmd/protoc-gen-go-ttrpcdesc).
plugins=$(mktemp -d)
trap 'rm -rf "$plugins"' EXIT
${GO:-go} build -o "$plugins/protoc-gen-go-ttrpcdesc" ./protocols/cmd/protoc-gen-go-ttrpcdesc

# google/protobuf/empty.proto comes from Debian's libprotobuf-dev, which
# protobuf-compiler only recommends.
wkt=/usr/include
[ -f "$wkt/google/protobuf/empty.proto" ] || { echo "generate.sh: $wkt/google/protobuf/empty.proto missing: apt-get install libprotobuf-dev" >&2; exit 1; }

# Stale outputs (e.g. of a removed .proto) must not survive a rerun.
rm -f protocols/agentpb/*.pb.go protocols/typespb/*.pb.go

# The sorted file list keeps protoc's input order stable.
protos=$(cd protocols/protos && find wren -name '*.proto' | LC_ALL=C sort)

# shellcheck disable=SC2086 # protos is a word list on purpose
(cd protocols/protos && protoc \
	-I . \
	-I "$wkt" \
	--go_out=../.. --go_opt=module=github.com/wren-vm/wren \
	--go-ttrpc_out=../.. --go-ttrpc_opt=module=github.com/wren-vm/wren \
	--plugin="protoc-gen-go-ttrpcdesc=$plugins/protoc-gen-go-ttrpcdesc" \
	--go-ttrpcdesc_out=../.. --go-ttrpcdesc_opt=module=github.com/wren-vm/wren \
	$protos)
