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

.PHONY: all deps deps-kernel build agent agent-policy wrenctl tools proto proto-check lint test bench bench-compare run image kernel kernel-config-check fuzz reliability clean

all: build

# The Debian packages of the targets below (base), and of `make kernel`
# (kernel: a compiler and Kbuild's tools; no QEMU or protoc).
deps:
	@scripts/install-deps.sh base
deps-kernel:
	@scripts/install-deps.sh kernel

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
test: deps lint proto-check build
	WREN_BIN=$(BIN) CGO_ENABLED=1 $(GO) run ./scripts/testprogress -- $(GO) test -json -tags '$(TAGS)' -count=1 -timeout $(TEST_TIMEOUT) $(TESTFLAGS) ./...

bench: deps build
	scripts/bench.sh

bench-compare:
	scripts/bench-compare.sh "$(OLD)" "$(NEW)"

run: deps
	scripts/run.sh

image: deps
	scripts/image.sh

kernel: deps-kernel
	guest-kernel-config/build.sh

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
