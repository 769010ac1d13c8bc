#!/usr/bin/env bash
# Builds the test guests into OUT_DIR (default: $CARGO_TARGET_DIR/guests, else target/guests
# in the repository): hello.wasm, probe.wasm and the wat/*.wat sources, which the image tool
# compiles itself. Quiet on success; on failure prints the build's output and exits non-zero.
#
#   tests/guests/build.sh [OUT_DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

out="${1:-${CARGO_TARGET_DIR:-$repo/target}/guests}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# The guests' own cargo target dir sits beside OUT_DIR, so it never touches (or waits on the
# lock of) the shim's build directory.
build_dir="$(dirname "$out")/guests-build"

# rustup picks the toolchain from the working directory (rust-toolchain.toml): run from here so
# the target is added to the same toolchain that cargo then builds with.
cd "$here"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run() {
    if ! "$@" >>"$log" 2>&1; then
        cat "$log" >&2
        echo "build.sh: failed: $*" >&2
        exit 1
    fi
}

# Idempotent and fast once installed. Skipped without rustup (then the toolchain must
# already have the target).
if command -v rustup >/dev/null; then
    run rustup target add wasm32-wasip1
fi

# Flags meant for the host build (e.g. -Cinstrument-coverage from cargo-llvm-cov, or the
# flags cargo passes when this runs under a build script) break or bloat a wasm build.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS

# No dependencies, so --offline never costs anything and the build needs no network.
run cargo build --quiet --offline --release --target wasm32-wasip1 \
    --manifest-path Cargo.toml --target-dir "$build_dir"

cp "$build_dir/wasm32-wasip1/release/hello.wasm" "$build_dir/wasm32-wasip1/release/probe.wasm" "$out/"
cp "$here"/wat/*.wat "$out/"
