#!/usr/bin/env bash
# Runs the benchmark (`make bench`, `make bench-quick`): builds the raw RocksDB and the Barrel
# HTTP peers, installs PouchDB into bench/node_modules from the committed lock file, compiles the
# Erlang driver, then runs it on the freshly built Barrel (`make build` ran first). See
# bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/barrel-target}"
case ":$PATH:" in
  *":$HOME/.cargo/bin:"*) ;;
  *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac
export LANG="${LANG:-C.UTF-8}"

# Built together with the NIF and barreld, as `make bench` builds the NIF (the Makefile's
# BENCH_CARGO_PACKAGES), so cargo unifies the same features and reuses what is compiled,
# barrel_core and librocksdb-sys included.
cargo build --release -p barrel_nif -p rocksdb_floor -p http_peer -p barreld

if ! command -v node >/dev/null 2>&1; then
  echo "bench: node and npm are required (apt-get install nodejs npm)" >&2
  exit 1
fi
if [ ! -f bench/node_modules/.package-lock.json ] \
   || [ bench/package-lock.json -nt bench/node_modules/.package-lock.json ]; then
  # --ignore-scripts: leveldown's prebuilt binaries ship inside its npm package.
  (cd bench && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

mkdir -p _build/bench
erlc -o _build/bench bench/bench_peer.erl
erlc -Wall -pa _build/bench -o _build/bench bench/*.erl

BENCH_TMP="$(mktemp -d "${TMPDIR:-/tmp}/barrel-bench.XXXXXX")"
export BENCH_TMP
trap 'rm -rf "$BENCH_TMP"' EXIT
erl -noshell -noinput +Bd -pa _build/default/lib/barrel/ebin -pa _build/bench \
  -eval 'barrel_bench:main()'
