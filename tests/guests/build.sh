#!/usr/bin/env bash
# Builds the test guests into OUT_DIR (default: $CARGO_TARGET_DIR/guests, else target/guests
# in the repository): hello.wasm, probe.wasm, probe-c.wasm (the C probe, always), the
# wat/*.wat sources, which the image tool compiles itself, and `sleeper`, `pause`, `hello` and `nprobe`,
# static native programs from native/. Prints one line saying how the guests were built; on failure prints the
# build's output and exits non-zero.
#
#   tests/guests/build.sh [OUT_DIR]
#
# hello and probe come from the Rust sources in src/bin (cargo, target wasm32-wasip1). Where that
# target cannot be installed (rustup downloads it from outside the package registries, which a
# machine may not reach), they come from their C twins in c/, built with Debian's clang-14 and
# wasi-libc, which are installed with apt-get if missing. WASM_GUESTS_FROM picks the source:
#   auto (default)  Rust, else C
#   rust            Rust only
#   c               C only (how the C twins are tested on a machine where Rust works)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

out="${1:-${CARGO_TARGET_DIR:-$repo/target}/guests}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# The guests' own cargo target dir sits beside OUT_DIR, so it never touches (or waits on the
# lock of) the shim's build directory.
build_dir="$(dirname "$out")/guests-build"

from="${WASM_GUESTS_FROM:-auto}"
case "$from" in
auto | rust | c) ;;
*)
    echo "build.sh: WASM_GUESTS_FROM must be auto, rust or c, not '$from'" >&2
    exit 2
    ;;
esac

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Runs a command with its output in the log; its status is the command's.
quietly() {
    echo "+ $*" >>"$log"
    "$@" >>"$log" 2>&1 </dev/null
}

give_up() {
    cat "$log" >&2
    echo "build.sh: failed: $*" >&2
    exit 1
}

build_rust() {
    command -v cargo >/dev/null || {
        echo "no cargo" >>"$log"
        return 1
    }
    # rustup picks the toolchain from the working directory (rust-toolchain.toml): run from
    # here so the target is added to the same toolchain that cargo then builds with.
    # Idempotent and fast once installed. Skipped without rustup (then the toolchain must
    # already have the target).
    if command -v rustup >/dev/null; then
        (cd "$here" && quietly rustup target add wasm32-wasip1) || return 1
    fi
    # Flags meant for the host build (e.g. -Cinstrument-coverage from cargo-llvm-cov, or the
    # flags cargo passes when this runs under a build script) break or bloat a wasm build.
    # No dependencies, so --offline never costs anything and the build needs no network.
    (
        cd "$here"
        unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
        quietly cargo build --quiet --offline --release --target wasm32-wasip1 \
            --manifest-path Cargo.toml --target-dir "$build_dir"
    ) || return 1
    cp "$build_dir/wasm32-wasip1/release/hello.wasm" \
        "$build_dir/wasm32-wasip1/release/probe.wasm" "$out/"
}

# Debian bookworm's: clang-14 compiles, lld-14 links (wasm-ld), wasi-libc is the C library
# (headers and libraries under /usr/{include,lib}/wasm32-wasi) and libclang-rt-14-dev-wasm32
# has the compiler builtins the link needs.
c_packages=(clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)

install_c_toolchain() {
    local missing=() p
    for p in "${c_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "missing ${missing[*]}, and apt-get cannot install them here (needs root)" >>"$log"
        return 1
    fi
    # Package lists of a fresh machine may be empty or stale: update before installing.
    quietly env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}"
}

build_c() {
    install_c_toolchain || return 1
    # The sysroot is /usr: clang finds wasi-libc in its wasm32-wasi multiarch directories.
    # The default exec model (command: _start calls main) is what the shim runs; no
    # -D_WASI_EMULATED_* is needed, since the guests use no signals, mmap, getpid or clock().
    # -s strips the names, as the Rust build's `strip = true` does.
    local guest
    for guest in hello probe; do
        quietly clang-14 --target=wasm32-wasi --sysroot=/usr -O2 -Wall -Wextra -s \
            -o "$out/$guest.wasm" "$here/c/$guest.c" || return 1
    done
}

case "$from" in
rust)
    build_rust || give_up "the Rust guests (WASM_GUESTS_FROM=rust)"
    echo "build.sh: guests built from Rust (wasm32-wasip1)"
    ;;
c)
    build_c || give_up "the C guests (WASM_GUESTS_FROM=c)"
    echo "build.sh: guests built from C (clang-14, wasi-libc), as WASM_GUESTS_FROM=c asks"
    ;;
auto)
    if build_rust; then
        echo "build.sh: guests built from Rust (wasm32-wasip1)"
    else
        echo "--- the Rust build failed; building the C twins instead" >>"$log"
        build_c || give_up "the guests, from Rust and from C"
        echo "build.sh: guests built from C (clang-14, wasi-libc): the Rust build failed"
    fi
    ;;
esac

# The C probe as well, whichever built the guests above: the terminal tests run C's isatty()
# (wasi-libc) on stdio, as a C program would.
install_c_toolchain && quietly clang-14 --target=wasm32-wasi --sysroot=/usr -O2 -Wall -Wextra -s \
    -o "$out/probe-c.wasm" "$here/c/probe.c" || give_up "the C probe (probe-c.wasm)"

cp "$here"/wat/*.wat "$out/"

# A static native program (gcc and glibc's static libc are on every machine of this kind), for
# the tests that compare a guest with what runc gives a native process under the same spec.
quietly gcc -static -O2 -Wall -o "$out/sleeper" "$here/native/sleeper.c" ||
    give_up "the native sleeper (gcc -static)"
# A static native program to exec into native containers (tests/cri.rs).
quietly gcc -static -O2 -Wall -Wextra -o "$out/nprobe" "$here/native/nprobe.c" ||
    give_up "the native nprobe (gcc -static)"
# A static native hello, printing what hello.wasm prints: the benchmark's runc side (make bench).
quietly gcc -static -O2 -Wall -Wextra -o "$out/hello" "$here/native/hello.c" ||
    give_up "the native hello (gcc -static)"
# And a static pause, for the pod sandboxes of the CRI tests (their pause image).
quietly gcc -static -O2 -Wall -Wextra -o "$out/pause" "$here/native/pause.c" ||
    give_up "the native pause (gcc -static)"
