# github-runner charm: `make charm` builds the deployable archive, `make test` runs every test
# on a fresh Debian or Ubuntu machine (installing what it needs first).

SHELL := /bin/bash
.DEFAULT_GOAL := charm

CHARM := github-runner_ubuntu-22.04-amd64.charm
RELEASE_BIN := target/release/github-runner-charm
RELEASE_WORKER_BIN := target/release/github-runner-worker
VENV := .venv
CHARMCRAFT_VERSION := 4.5.0

# Debian/Ubuntu packages the build and the tests need. Extend this list (LXD, ...) rather
# than adding install steps elsewhere.
APT_PACKAGES := python3 python3-venv python3-pip binutils gcc libc6-dev pkg-config curl ca-certificates \
	lxd lxd-client busybox-static shellcheck nftables dnsmasq-base iproute2 redis-server

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CARGO := $(shell command -v cargo || echo $(HOME)/.cargo/bin/cargo)

.PHONY: charm test deps apt-deps rust venv lxd lint bench clean-charm clean-lxd

## charm: release binary + github-runner_ubuntu-22.04-amd64.charm at the repo root.
charm:
	$(CARGO) build --release --locked --bin github-runner-charm --bin github-runner-worker
	python3 scripts/pack_charm.py --binary $(RELEASE_BIN) --worker-binary $(RELEASE_WORKER_BIN) \
		--output $(CHARM)

## test: the whole suite; the archive tests check the release binary `make charm` ships.
## The test binaries run TEST_JOBS at a time (scripts/run_tests.py): most of them wait on
## LXD, redis or child processes, not the CPU. TEST_JOBS=1 runs them as `cargo test` does.
## A binary still running after TEST_BINARY_TIMEOUT (600 s) is killed and fails the run,
## with its processes and the hung tests named.
TEST_JOBS ?= 3
test: deps charm
	GITHUB_RUNNER_CHARM_BINARY=$(CURDIR)/$(RELEASE_BIN) PATH="$(dir $(CARGO)):$$PATH" \
		python3 scripts/run_tests.py --jobs $(TEST_JOBS) -- --locked --all-targets --features testkit

## deps: everything `make test` needs. Idempotent: installs only what is missing.
deps: apt-deps rust venv lxd

## lxd: a running LXD daemon with a dir pool, for the tests against the real daemon.
lxd: apt-deps
	sh tests/support/lxd_fixture/setup-lxd.sh

apt-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# Ubuntu/Debian ship older Rust than Cargo.toml's rust-version: rustup when cargo is missing.
rust:
	@if ! command -v cargo >/dev/null && [ ! -x $(HOME)/.cargo/bin/cargo ]; then \
		curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal; \
	fi

venv: $(VENV)/bin/charmcraft $(VENV)/.prometheus-client $(VENV)/.reactive-deps

# The Prometheus project's Python client: its strict OpenMetrics parser checks the exporter.
$(VENV)/.prometheus-client: $(VENV)/bin/charmcraft
	$(VENV)/bin/pip install --quiet "prometheus-client==0.26.0"
	touch $@

# The real kombu producer/consumer (Redis and MongoDB transports) and the MongoDB wire
# stand-in (mockupdb over pymongo's bson) for the reactive queue tests.
REACTIVE_PIP := "kombu[redis,mongodb]==5.7.0" "pymongo==4.18.3" "mockupdb==1.8.1" "redis==8.1.0"
$(VENV)/.reactive-deps:
	[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet $(REACTIVE_PIP)
	touch $@

$(VENV)/bin/charmcraft:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "charmcraft==$(CHARMCRAFT_VERSION)"

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets --features testkit -- -D warnings

## bench: hook wall time through dispatch, and reconcile cost (from zero to 10 online and
## steady state, parallel vs serial; needs LXD), printed as tables (release build).
bench:
	$(CARGO) bench --locked --features testkit --bench hooks
	$(CARGO) bench --locked --features testkit --bench reconcile

clean-charm:
	rm -f $(CHARM)

## clean-lxd: remove every LXD project, image, pool, network and ACL the tests made (and the
## unused `default` pool setup-lxd.sh makes), so the next `make test` starts as on a fresh
## machine. Only while no test runs.
clean-lxd:
	python3 tests/support/lxd_fixture/clean-lxd.py
