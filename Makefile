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

FUZZTIME ?= 10s
INTEGRATION_TIMEOUT ?= 20m

.PHONY: all build deps install uninstall demo test unit fuzz-seeds fuzz integration vet fmt clean

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

demo: deps build
	NSISO_DEPS_BIN=$(DEPS_BIN) NSISO_BIN=$(BIN) $(GO) run ./demo

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...

# Unit tests of pure code; `go test` also runs every committed fuzz seed
# (testdata/fuzz) and the f.Add seeds.
unit:
	$(GO) test -count=1 ./specmod/... ./shim/... ./hostns/... ./internal/... ./examples/... ./audit/... ./cmd/nsiso/... ./bench/...

# Short coverage-guided fuzzing, on demand.
fuzz:
	$(GO) test ./specmod -run '^$$' -fuzz '^FuzzParseSize$$' -fuzztime $(FUZZTIME)
	$(GO) test ./specmod -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME)
	$(GO) test ./specmod -run '^$$' -fuzz '^FuzzRewrite$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shim -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shim -run '^$$' -fuzz '^FuzzConfigMatchesGoTOML$$' -fuzztime $(FUZZTIME)

integration: deps build
	NSISO_DEPS_BIN=$(DEPS_BIN) NSISO_BIN=$(BIN) $(GO) test -count=1 -timeout $(INTEGRATION_TIMEOUT) -v ./testenv/... ./integration/...

test: vet unit integration

clean:
	rm -rf $(OUT)

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
