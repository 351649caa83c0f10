#!/bin/sh
# Builds the NIF with cargo and installs it as priv/barrel_nif.so.
# Called by mix.exs (compiler :barrel_nif) and rebar.config (pre_hooks), so both
# build tools produce the same library. Uses CARGO_TARGET_DIR when set, else one
# shared target dir, $HOME/.cache/barrel-target, so RocksDB is compiled once per
# machine rather than once per checkout.
set -e
cd "$(dirname "$0")/.."
CARGO="${CARGO:-cargo}"
if ! command -v "$CARGO" >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  CARGO="$HOME/.cargo/bin/cargo"
fi
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/barrel-target}"
export CARGO_TARGET_DIR
# BARREL_NIF_CARGO_PACKAGES: the packages built with it (`make bench` adds the benchmark's,
# which bench/run.sh builds, so barrel_core compiles once for both).
# shellcheck disable=SC2086
"$CARGO" build --release ${BARREL_NIF_CARGO_PACKAGES:--p barrel_nif}
TARGET="$CARGO_TARGET_DIR"
LIB="$TARGET/release/libbarrel_nif.so"
[ -f "$LIB" ] || LIB="$TARGET/release/libbarrel_nif.dylib"
mkdir -p priv
# Copy then rename, so a VM that has the old library loaded keeps a valid file.
cp -f "$LIB" priv/barrel_nif.so.tmp
mv -f priv/barrel_nif.so.tmp priv/barrel_nif.so
