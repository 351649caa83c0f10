# Barrel: build, test and lint entry points. `.ci/run` uses these targets.
#
#   make deps    install Erlang/OTP, Elixir, rebar3 and clang from apt when missing
#   make build   compile the NIF (cargo, through rebar3's pre_hook) and the Erlang app
#   make demo    run examples/demo.erl against a throwaway data dir
#   make test    Rust engine and HTTP tests, EUnit (and CT), ExUnit, PouchDB interop, the example apps
#   make lint    rustfmt and mix format checks, clippy with warnings as errors
#   make fmt     rewrite Rust and Elixir sources in place
#   make clean   remove build outputs of this clone (the shared cargo cache stays)
#   make bench   Barrel against its peers (Mnesia, DETS, RocksDB, PouchDB): bench/RESULTS.md
#   make bench-quick  the same with small counts, to try the harness (prints the table only)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# One cargo target dir outside the clone, shared by every build of every clone:
# RocksDB then compiles once. It must be absolute because the NIF build script
# also runs from the example apps.
CARGO_TARGET_DIR ?= $(HOME)/.cache/barrel-target
override CARGO_TARGET_DIR := $(abspath $(CARGO_TARGET_DIR))
export CARGO_TARGET_DIR
# rustup's cargo, when the shell that runs make has not put it on PATH.
ifeq ($(shell command -v cargo),)
export PATH := $(HOME)/.cargo/bin:$(PATH)
endif
# The project has no hex dependencies; never let Mix go looking for them.
export HEX_OFFLINE := 1

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
CT_SUITES := $(wildcard test/*_SUITE.erl)

# Steps share _build/ and the cargo lock: run them one after the other, even
# under -j. With -k (as .ci/run does) every step still runs after a failure.
.NOTPARALLEL:

.PHONY: deps build demo test test-rust test-erlang test-elixir test-pouchdb test-examples \
        test-example-rebar3 test-example-mix \
        lint fmt rustfmt-check clippy mix-format-check clean

deps:
	@pkgs=""; \
	command -v erl >/dev/null 2>&1 || pkgs="$$pkgs erlang-nox erlang-dev"; \
	command -v elixir >/dev/null 2>&1 && command -v mix >/dev/null 2>&1 || pkgs="$$pkgs elixir"; \
	command -v rebar3 >/dev/null 2>&1 || pkgs="$$pkgs rebar3"; \
	command -v clang >/dev/null 2>&1 || pkgs="$$pkgs clang"; \
	[ -n "$${LIBCLANG_PATH:-}" ] || ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 \
	  || pkgs="$$pkgs libclang-dev"; \
	command -v c++ >/dev/null 2>&1 || pkgs="$$pkgs g++"; \
	command -v node >/dev/null 2>&1 || pkgs="$$pkgs nodejs"; \
	command -v npm >/dev/null 2>&1 || pkgs="$$pkgs npm"; \
	if [ -n "$$pkgs" ]; then \
	  echo "deps: installing$$pkgs from apt"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$pkgs; \
	else \
	  echo "deps: erl, elixir, rebar3, clang, libclang, a C++ compiler, node and npm are installed"; \
	fi
	@command -v cargo >/dev/null 2>&1 || { \
	  echo "deps: cargo not found (expected rustup's toolchain in $(HOME)/.cargo/bin)" >&2; exit 1; }
	@echo "deps: $$(cargo --version); CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)"

build: deps
	rebar3 compile

demo: build
	escript examples/demo.erl

test: deps test-rust test-erlang test-elixir test-pouchdb test-examples

test-rust: deps
	cargo test --release --no-fail-fast -p barrel_core

test-erlang: deps
	rebar3 eunit
ifneq ($(CT_SUITES),)
	rebar3 ct
endif

test-elixir: deps
	mix test

# PouchDB (from npm, installed into test/pouchdb/node_modules from the committed lock file)
# replicating with barreld over HTTP.
test-pouchdb: deps
	cargo build --release -p barreld
	@cd test/pouchdb && \
	if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
	  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error; \
	fi
	cd test/pouchdb && node interop.js $(CARGO_TARGET_DIR)/release/barreld

test-examples: test-example-rebar3 test-example-mix

test-example-rebar3: deps
	cd examples/rebar3_app && rebar3 eunit

test-example-mix: deps
	@if [ -d examples/mix_app ]; then \
	  echo "cd examples/mix_app && mix test"; \
	  cd examples/mix_app && mix test; \
	else \
	  echo "examples/mix_app is missing: skipping its tests"; \
	fi

lint: rustfmt-check clippy mix-format-check

rustfmt-check:
	cargo fmt --all -- --check

clippy: deps
	cargo clippy --release --workspace --all-targets -- -D warnings

mix-format-check: deps
	mix format --check-formatted
	@if [ -f examples/mix_app/.formatter.exs ]; then \
	  echo "cd examples/mix_app && mix format --check-formatted"; \
	  cd examples/mix_app && mix format --check-formatted; \
	fi

fmt: deps
	cargo fmt --all
	mix format
	if [ -f examples/mix_app/.formatter.exs ]; then cd examples/mix_app && mix format; fi

# Benchmarks: bench/run.sh builds the RocksDB peer, installs PouchDB into bench/node_modules and
# runs the driver on the Barrel just built. BENCH_FULL=1 adds 10M documents; see bench/README.md.
.PHONY: bench bench-quick

# The NIF is built together with the benchmark's own crates (as bench/run.sh builds them):
# building it alone resolves other features for some shared dependencies (the HTTP peer's
# client brings more of `syn`), so after an engine change barrel_core compiled twice, a minute
# more of `make bench`.
BENCH_CARGO_PACKAGES := -p barrel_nif -p rocksdb_floor -p http_peer -p barreld
bench bench-quick: export BARREL_NIF_CARGO_PACKAGES = $(BENCH_CARGO_PACKAGES)

bench: build
	bash bench/run.sh

bench-quick: build
	BENCH_QUICK=1 bash bench/run.sh

clean:
	rm -rf _build deps priv/*.so priv/*.tmp barrel_data erl_crash.dump
	rm -rf examples/*/_build examples/*/deps examples/*/barrel_data test/pouchdb/node_modules
