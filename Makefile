# nsiso: containerd runtime shim io.containerd.nsiso.v1.
#
#   make demo     install what it needs, run a private containerd and show each policy
#   make test     unit tests, fuzz seeds and the integration suite (as root)
#   make install  put containerd-shim-nsiso-v1 and nsiso on PATH

SHELL := /bin/bash
GO ?= go
PREFIX ?= /usr/local
OUT := $(CURDIR)/_output
BIN := $(OUT)/bin

# Pinned versions of what the tests, demo and benchmarks run against.
RUNC_VERSION ?= v1.4.3
CONTAINERD_VERSION ?= v2.4.2
DEPS_BIN ?= $(OUT)/deps/$(CONTAINERD_VERSION)/bin
export RUNC_VERSION CONTAINERD_VERSION

# The installer image of deploy/ (make image); the manifests name this tag.
INSTALLER_IMAGE ?= ghcr.io/nsiso/nsiso-installer:dev
INSTALLER_ARCHIVE ?= $(OUT)/nsiso-installer.tar

FUZZTIME ?= 10s
INTEGRATION_TIMEOUT ?= 20m

.PHONY: all build deps install uninstall demo test unit fuzz-seeds fuzz integration vet fmt clean image

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/containerd-shim-nsiso-v1 ./cmd/containerd-shim-nsiso-v1
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/nsiso ./cmd/nsiso

deps:
	BIN=$(DEPS_BIN) bash scripts/install-deps.sh

install: build
	install -D -m 0755 $(BIN)/containerd-shim-nsiso-v1 $(DESTDIR)$(PREFIX)/bin/containerd-shim-nsiso-v1
	install -D -m 0755 $(BIN)/nsiso $(DESTDIR)$(PREFIX)/bin/nsiso

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/containerd-shim-nsiso-v1 $(DESTDIR)$(PREFIX)/bin/nsiso

# The installer image as an OCI archive: ctr -n k8s.io images import on a
# node, or push it to a registry (docs/install.md: A cluster).
image: build
	$(GO) run ./deploy/image -busybox /bin/busybox -bin $(BIN) -ref $(INSTALLER_IMAGE) -o $(INSTALLER_ARCHIVE)

demo: deps build
	NSISO_DEPS_BIN=$(DEPS_BIN) NSISO_BIN=$(BIN) $(GO) run ./demo

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	cd deploy/admission && $(GO) vet ./...

# golangci-lint with .golangci.yml, the pinned release built into
# _output/deps on first use; deploy/admission is linted as its own module.
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT := $(OUT)/deps/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
# make test lints the main module; the admission module's tests type-check
# against the Kubernetes API server, which takes minutes on a cold cache.
.PHONY: lint lint-main
lint: lint-main
	cd deploy/admission && $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml ./...

lint-main: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

$(GOLANGCI_LINT):
	GOBIN=$(@D) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

# Unit tests of pure code; `go test` also runs every committed fuzz seed
# (testdata/fuzz) and the f.Add seeds. deploy/admission is a module of its
# own (the admission policy, run by the Kubernetes API server's plugin).
unit:
	$(GO) test -count=1 ./specmod/... ./shim/... ./hostns/... ./internal/... ./examples/... ./audit/... ./cmd/nsiso/... ./nodeinstall/... ./deploy/... ./bench/... ./e2e/
	cd deploy/admission && $(GO) test -count=1 ./...

# Short coverage-guided fuzzing, on demand.
fuzz:
	$(GO) test ./specmod -run '^$$' -fuzz '^FuzzParseSize$$' -fuzztime $(FUZZTIME)
	$(GO) test ./specmod -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME)
	$(GO) test ./specmod -run '^$$' -fuzz '^FuzzRewrite$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shim -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME)

integration: deps build
	NSISO_DEPS_BIN=$(DEPS_BIN) NSISO_BIN=$(BIN) $(GO) test -count=1 -timeout $(INTEGRATION_TIMEOUT) -v ./testenv/... ./integration/...

test: vet lint-main unit integration

# A one-node Kubernetes (etcd, kube-apiserver, controller-manager,
# scheduler, kubelet, kube-proxy; pinned in e2e/tools) on the project's
# own containerd, in a network and mount namespace of its own: installs
# nsiso with the DaemonSet of deploy/, runs pods, the admission policy and
# the audit against it, measures pod start-up, uninstalls. On demand, not
# part of make test: the first build of Kubernetes takes about 25 minutes.
E2E_BIN ?= $(OUT)/deps/e2e/bin
E2E_TIMEOUT ?= 40m
.PHONY: e2e e2e-deps
e2e-deps:
	BIN=$(E2E_BIN) RUNC_VERSION=$(RUNC_VERSION) bash scripts/install-e2e-deps.sh

e2e: deps build image e2e-deps
	$(GO) test -c -o $(OUT)/e2e.test ./e2e
	cd e2e && NSISO_E2E_BIN=$(E2E_BIN) NSISO_DEPS_BIN=$(DEPS_BIN) NSISO_BIN=$(BIN) \
		NSISO_INSTALLER_ARCHIVE=$(INSTALLER_ARCHIVE) $(OUT)/e2e.test -test.v -test.timeout $(E2E_TIMEOUT)

clean:
	rm -rf $(OUT)

# The compatibility matrix, on demand only (CI runs the pinned pair): the
# integration suite on each containerd with each runc (docs/compatibility.md).
MATRIX_CONTAINERD ?= v2.0.14 v2.2.9 v2.4.2
MATRIX_RUNC ?= debian v1.4.3 v1.5.2
.PHONY: matrix
matrix: build
	CONTAINERD_VERSIONS="$(MATRIX_CONTAINERD)" RUNC_VERSIONS="$(MATRIX_RUNC)" NSISO_BIN=$(BIN) bash scripts/matrix.sh

# Benchmarks, on demand only: the spec rewrite and shim micro-benchmarks,
# then nsiso against the stock runc.v2 (and runc.v2 built from nsiso's
# library) side by side on private containerds; the report (tables, and
# _output/bench/result.json) includes both. Flags go in BENCH_FLAGS, e.g.
# BENCH_FLAGS='-only ctr -n 200' (docs/performance.md lists them).
BENCH_FLAGS ?=
.PHONY: bench
bench: deps build
	@mkdir -p $(OUT)/bench
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem ./specmod/ ./shim/ | tee $(OUT)/bench/micro.txt
	NSISO_DEPS_BIN=$(DEPS_BIN) NSISO_BIN=$(BIN) $(GO) run ./bench -micro $(OUT)/bench/micro.txt $(BENCH_FLAGS)
