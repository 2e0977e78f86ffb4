# ferry: the commands CI and people run. `make demo` and `make test` are the two that
# must work on a fresh machine.
SHELL := /bin/bash
CARGO ?= cargo
DEMO_DIR ?= demo
SERVICES := bash scripts/services.sh

.PHONY: all deps tools build release release-bins image image-test demo test lint fmt clean bench services-up services-down services-env

all: build

# protoc is needed by our build script (and by etcd-client later): install Debian's
# protobuf-compiler when it is missing.
deps:
	@if ! command -v protoc >/dev/null 2>&1 && [ -z "$$PROTOC" ]; then \
		echo "installing protobuf-compiler (protoc)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq protobuf-compiler >/dev/null; \
	fi
	@command -v sqlite3 >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq sqlite3 >/dev/null; }

# helm (v4) and kubectl in .tools/bin (git-ignored), for the chart tests
# (tests/tests/helm_chart.rs); does nothing when they are installed already.
tools:
	bash scripts/tools.sh

build: deps
	$(CARGO) build --workspace

release: deps
	$(CARGO) build --release -p ferry-ctl

# The three binaries the image holds.
release-bins: deps
	$(CARGO) build --release -p ferry-ctl -p ferry-coordinator -p ferry-worker --bins

# The container image the Helm chart runs (Containerfile), FROM scratch with buildah
# (installed with apt when missing; needs root). IMAGE=... names it (default
# localhost/ferry:VERSION), then runs the image test below: a binary that cannot run in it
# (a missing library) fails the build. Not part of `make test` (a cold release build takes
# about 19 minutes on 2 cores).
image: release-bins
	bash scripts/image.sh build
	bash scripts/image.sh test

# Mounts the built image and runs each binary's --version (and the coordinator's and
# worker's --help) inside it with chroot; checks the chart's commands are in it.
image-test: image
	bash scripts/image.sh test

# Runs a 1,000,000-row sample migration on the embedded default (SQLite → SQLite).
demo: release
	rm -rf $(DEMO_DIR)
	./target/release/ferryctl demo --dir $(DEMO_DIR)

# Every test: unit, property, end to end. The CLI tests drive the ferryctl binary,
# and the end-to-end tests compare source and target independently with sqlite3.
# Real PostgreSQL, MariaDB (each also TLS-only) and etcd run on loopback for them
# (scripts/services.sh), which also installs the headless Chromium and chromedriver the
# web console's tests drive (tests/tests/console.rs).
# The distributed tests start ferry-coordinator and ferry-worker as child processes;
# `cargo test` builds another package's binaries only as test harnesses, so build them first.
test: deps tools
	$(SERVICES) up
	$(CARGO) build --workspace --bins
	eval "$$($(SERVICES) env)" && $(CARGO) test --workspace --all-targets

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Our own PostgreSQL (55432), MariaDB (53306), TLS-only PostgreSQL (55442) and MariaDB
# (53316), etcd (52379) and a TLS + authentication etcd (52389), two ClickHouse servers
# (HTTP 58123/58124) and ZooKeeper (52181) on 127.0.0.1, state in
# $${FERRY_SERVICES_DIR:-/tmp/ferry-services}; `eval "$$(make -s services-env)"` exports
# FERRY_TEST_PG_URL, FERRY_TEST_MYSQL_URL, FERRY_TEST_PG_TLS_URL, FERRY_TEST_MYSQL_TLS_URL,
# FERRY_TEST_TLS_DIR, FERRY_TEST_ETCD_ENDPOINTS, FERRY_TEST_ETCD_TLS_ENDPOINTS,
# FERRY_TEST_ETCD_TLS_DIR, FERRY_TEST_CLICKHOUSE_URL and FERRY_TEST_CLICKHOUSE_URL_2.
services-up:
	$(SERVICES) up

services-down:
	$(SERVICES) down

services-env:
	@$(SERVICES) env

clean:
	$(CARGO) clean
	rm -rf $(DEMO_DIR)

# ferry against pg COPY pipes, LOAD DATA pipes, mariadb-dump and pgloader on the same data;
# writes bench/RESULTS.md. Not part of `make test`.
bench: deps release-bins
	$(SERVICES) up
	bash bench/run.sh
