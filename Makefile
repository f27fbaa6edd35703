# Wren build entry points. Every target is safe to run on a fresh checkout:
# the ones that need more than Go (protoc, QEMU, a kernel's build tools)
# install the missing Debian packages first (scripts/install-deps.sh, which
# is quick and silent when everything is present; as root).

GO        ?= go
BIN       := $(CURDIR)/bin
TOOLBIN   := $(BIN)/tools
# seccomp links Debian's static libseccomp so containers can get seccomp filters.
TAGS      := netgo osusergo seccomp
GOFLAGS_STATIC := -trimpath -tags '$(TAGS)'
LDFLAGS_STATIC := -s -w -extldflags -static
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS_VERSION := -X github.com/wren-vm/wren/agent/version.Version=$(VERSION)

# Tests use real namespaces, mounts and cgroups: they need root.
TEST_TIMEOUT ?= 40m
TESTFLAGS ?=

.PHONY: all deps deps-kernel deps-arm64 build agent agent-policy agent-arm64 wrenctl tools proto proto-check lint test bench bench-compare run image kernel kernel-config-check fuzz reliability clean

all: build

# The Debian packages of the targets below (base), of `make kernel`
# (kernel: a compiler and Kbuild's tools; arm64: the cross compiler) and of
# the arm64 guest (arm64: also libseccomp-dev:arm64 and qemu-system-arm).
deps:
	@scripts/install-deps.sh base
deps-kernel:
	@scripts/install-deps.sh kernel arm64
deps-arm64:
	@scripts/install-deps.sh arm64

build: agent agent-policy wrenctl tools

agent: deps
	@mkdir -p $(BIN)
	CGO_ENABLED=1 GO=$(GO) scripts/gobuild.sh wren-agent $(GOFLAGS_STATIC) -ldflags '$(LDFLAGS_STATIC) $(LDFLAGS_VERSION)' -o $(BIN)/wren-agent ./agent/cmd/wren-agent

# The agent with the policy engine (OPA; build tag "policy"): every request
# checked against a Rego policy, SetPolicy. About twice the default agent's
# size (docs/benchmarks.md), so a separate binary the image builder can
# choose (rootfs-builder --agent bin/wren-agent-policy --policy FILE).
agent-policy: deps
	@mkdir -p $(BIN)
	CGO_ENABLED=1 GO=$(GO) scripts/gobuild.sh wren-agent-policy -trimpath -tags '$(TAGS) policy' -ldflags '$(LDFLAGS_STATIC) $(LDFLAGS_VERSION)' -o $(BIN)/wren-agent-policy ./agent/cmd/wren-agent

# The agent of arm64 guests, cross-built with cgo against Debian's arm64
# libseccomp (multiarch), static like `agent`.
agent-arm64: deps-arm64
	@mkdir -p $(BIN)
	CGO_ENABLED=1 GOARCH=arm64 CC=aarch64-linux-gnu-gcc PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig GO=$(GO) scripts/gobuild.sh wren-agent-arm64 $(GOFLAGS_STATIC) -ldflags '$(LDFLAGS_STATIC) $(LDFLAGS_VERSION)' -o $(BIN)/wren-agent-arm64 ./agent/cmd/wren-agent

wrenctl: deps
	@mkdir -p $(BIN)
	CGO_ENABLED=0 GO=$(GO) scripts/gobuild.sh wrenctl -trimpath -ldflags '-s -w $(LDFLAGS_VERSION)' -o $(BIN)/wrenctl ./harness/cmd/wrenctl

# The host-side binaries besides wrenctl.
HOST_TOOLS := vsockd/cmd/wren-vsockd rootfs-builder/cmd/rootfs-builder
tools: deps
	@mkdir -p $(BIN)
	@for d in $(HOST_TOOLS); do \
		CGO_ENABLED=0 GO=$(GO) scripts/gobuild.sh $$(basename $$d) -trimpath -ldflags '-s -w' -o $(BIN)/$$(basename $$d) ./$$d || exit 1; \
	done

$(TOOLBIN)/protoc-gen-go $(TOOLBIN)/protoc-gen-go-ttrpc: go.mod go.sum
	@mkdir -p $(TOOLBIN)
	$(GO) build -o $(TOOLBIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) build -o $(TOOLBIN)/protoc-gen-go-ttrpc github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc

# Regenerates protocols/*/*.pb.go from protocols/protos (protoc from Debian's
# protobuf-compiler; the Go plugins are pinned by the tool lines of go.mod).
proto: deps $(TOOLBIN)/protoc-gen-go $(TOOLBIN)/protoc-gen-go-ttrpc
	PATH=$(TOOLBIN):$$PATH ./protocols/generate.sh

# Fails when the committed generated code differs from what `make proto` writes.
proto-check: proto
	@git diff --exit-code --stat -- protocols/ || { echo "generated code is stale: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- protocols/)" || { git status --porcelain -- protocols/; echo "make proto wrote untracked files"; exit 1; }

# golangci-lint (pinned, built into bin/tools on first use) runs the
# linters of .golangci.yml: errcheck, govet, staticcheck, ineffassign,
# unused, and the length and complexity thresholds.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	CGO_ENABLED=1 $(GO) vet -tags '$(TAGS)' ./...
	@GO=$(GO) scripts/install-golangci-lint.sh $(TOOLBIN)
	CGO_ENABLED=1 $(TOOLBIN)/golangci-lint run ./...
	@# The policy build's own file (agent/assemble/policy_on.go).
	CGO_ENABLED=1 $(GO) vet -tags '$(TAGS) policy' ./agent/assemble/
	CGO_ENABLED=1 $(TOOLBIN)/golangci-lint run --build-tags policy ./agent/assemble/

# scripts/testprogress prints a line per package as it finishes (in the
# order they finish), a failed package's whole output, and what still runs
# when nothing finished for 30 s.
# The pod VM tests boot make kernel's guest kernels (out/), which come from
# their cache in seconds, or are built when it is empty (README: times).
test: deps lint proto-check build agent-arm64 kernel
	WREN_BIN=$(BIN) WREN_OUT=$(CURDIR)/out CGO_ENABLED=1 $(GO) run ./scripts/testprogress -- $(GO) test -json -tags '$(TAGS)' -count=1 -timeout $(TEST_TIMEOUT) $(TESTFLAGS) ./...

bench: deps build
	scripts/bench.sh

bench-compare:
	scripts/bench-compare.sh "$(OLD)" "$(NEW)"

run: deps
	scripts/run.sh

image: deps
	scripts/image.sh

# Wren's guest kernels, built from guest-kernel-config/ and cached by
# config and source version in /var/cache/wren/guest-kernel (a no-op copy
# into out/ when cached). KERNEL_ARCHES=x86_64 builds one.
KERNEL_ARCHES ?= x86_64 arm64
kernel: deps-kernel
	@for a in $(KERNEL_ARCHES); do ARCH=$$a GO=$(GO) guest-kernel-config/build.sh || exit 1; done

kernel-config-check:
	guest-kernel-config/check.sh "$(KCONFIG)"

# Runs the reliability tests and regenerates docs/reliability.md from
# their output (fuzz figures come from `make fuzz`).
reliability: deps build
	WREN_BIN=$(BIN) scripts/reliability-report.sh

FUZZTIME ?= 30s
fuzz: deps
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

clean:
	rm -rf $(BIN)
