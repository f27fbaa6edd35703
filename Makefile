# Wren build entry points. Every target is safe to run on a fresh checkout;
# targets that need more than Go (protoc, QEMU, a kernel) say what is missing.

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

.PHONY: all build agent wrenctl tools proto proto-check lint test bench bench-compare run image kernel kernel-config-check fuzz reliability clean

all: build

build: agent wrenctl tools

agent:
	@mkdir -p $(BIN)
	CGO_ENABLED=1 $(GO) build $(GOFLAGS_STATIC) -ldflags '$(LDFLAGS_STATIC) $(LDFLAGS_VERSION)' -o $(BIN)/wren-agent ./agent/cmd/wren-agent

wrenctl:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS_VERSION)' -o $(BIN)/wrenctl ./harness/cmd/wrenctl

# The host-side binaries besides wrenctl.
HOST_TOOLS := vsockd/cmd/wren-vsockd rootfs-builder/cmd/rootfs-builder
tools:
	@mkdir -p $(BIN)
	@for d in $(HOST_TOOLS); do \
		echo "go build $$d"; CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/$$(basename $$d) ./$$d || exit 1; \
	done

$(TOOLBIN)/protoc-gen-go $(TOOLBIN)/protoc-gen-go-ttrpc: go.mod go.sum
	@mkdir -p $(TOOLBIN)
	$(GO) build -o $(TOOLBIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) build -o $(TOOLBIN)/protoc-gen-go-ttrpc github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc

# Regenerates protocols/*/*.pb.go from protocols/protos (protoc from Debian's
# protobuf-compiler; the Go plugins are pinned by the tool lines of go.mod).
proto: $(TOOLBIN)/protoc-gen-go $(TOOLBIN)/protoc-gen-go-ttrpc
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler"; exit 1; }
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

test: lint proto-check build
	WREN_BIN=$(BIN) CGO_ENABLED=1 $(GO) test -tags '$(TAGS)' -count=1 -timeout $(TEST_TIMEOUT) $(TESTFLAGS) ./...

bench: build
	scripts/bench.sh

bench-compare:
	scripts/bench-compare.sh "$(OLD)" "$(NEW)"

run:
	scripts/run.sh

image:
	scripts/image.sh

kernel:
	guest-kernel-config/build.sh

kernel-config-check:
	guest-kernel-config/check.sh "$(KCONFIG)"

# Runs the reliability tests and regenerates docs/reliability.md from
# their output (fuzz figures come from `make fuzz`).
reliability: build
	WREN_BIN=$(BIN) scripts/reliability-report.sh

FUZZTIME ?= 30s
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

clean:
	rm -rf $(BIN)
