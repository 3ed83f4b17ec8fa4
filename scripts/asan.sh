#!/usr/bin/env bash
# AddressSanitizer (with LeakSanitizer) over the FFI: the pinned llama.cpp/ggml compiled with
# gcc -fsanitize=address, the Rust side with nightly -Zsanitizer=address, then the tests that
# cross the FFI: cpp-sys's kernel parity (ggml's quantizers and dot products called directly)
# and the harness's oracle tests (the built-in llama.cpp through its C API and tap callback, the
# ggml-graph oracle, the isolated oracle worker, the golden replays). With
# XVAL_TEST_BITNET_CPP=DIR also the runtime-loaded bitnet.cpp tree (that tree is not itself
# instrumented; ASan still checks every access the Rust side and the shim make, and its
# allocator checks the tree's frees).
#
# Usage: scripts/asan.sh [extra cargo test arguments, e.g. -- --test-threads=1]
# Needs: nightly Rust (rustup toolchain install nightly), gcc/g++, cmake. Builds into
# target/asan/ (about 15 minutes on 2 cores the first time). Exit status: the tests'; any
# ASan or LSan report fails the test that triggered it (abort_on_error), and the report is kept
# under target/asan/reports/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
host=x86_64-unknown-linux-gnu
reports="$root/target/asan/reports"
mkdir -p "$reports"
rm -f "$reports"/asan.*

export CARGO_TARGET_DIR="$root/target/asan"
# gcc, as the default build uses: its floating-point contraction is what the golden
# recordings and the kernel parity tests were made with (clang contracts differently, so
# bit-exact tests would fail for numerics, not memory, reasons). Its instrumentation calls
# the same __asan_* interface the Rust runtime provides.
export CC=gcc CXX=g++
export CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g"
export CXXFLAGS="$CFLAGS"
# An explicit --target keeps the sanitizer off build scripts and proc macros.
export RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes"
export RUSTDOCFLAGS="$RUSTFLAGS"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:log_path=$reports/asan"
export LSAN_OPTIONS="suppressions=$root/scripts/lsan.supp:print_suppressions=0"
# The tests spawn the harness binary (oracle workers, CLI tests): it is built the same way and
# inherits these settings.

# llama-cpp-sys-2's build script does not rerun when the compiler or its flags change: a
# stamp of them decides when its cmake build must be redone.
stamp="$CARGO_TARGET_DIR/c-flags.stamp"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$CC $CXX $CFLAGS" ]]; then
    cargo +nightly clean --quiet --target "$host" -p llama-cpp-sys-2
    echo "$CC $CXX $CFLAGS" >"$stamp"
fi

tests=(
    --test oracle_llama
    --test oracle_ggml_graph
    --test oracle_isolation
    --test oracle_engine
    --test compare_golden
    --test golden
)

status=0
cargo +nightly test --target "$host" -p xval-cpp-sys --tests "$@" || status=$?
cargo +nightly test --target "$host" -p xval-harness "${tests[@]}" "$@" || status=$?
if [[ -n "${XVAL_TEST_BITNET_CPP:-}" ]]; then
    # Skipped: `builtin_tree::`, which loads the built-in llama.cpp as an external tree. Built
    # here with -fsanitize=address, its libraries need the ASan runtime's symbols from the
    # dlopen()ed shim, and Rust links that runtime statically without exporting them
    # ("undefined symbol: __asan_option_detect_stack_use_after_return"). The built-in tree runs
    # under ASan through `oracle_llama`, the shim and dlopen path through the bitnet.cpp tree.
    cargo +nightly test --target "$host" -p xval-harness --test oracle_external \
        --test oracle_bitnet_cpp "$@" -- --skip builtin_tree:: || status=$?
fi

shopt -s nullglob
found=("$reports"/asan.*)
if (( ${#found[@]} > 0 )); then
    echo "asan.sh: ${#found[@]} sanitizer report(s):" >&2
    for f in "${found[@]}"; do
        echo "== $f" >&2
        grep -m3 -E 'ERROR: |SUMMARY: ' "$f" >&2 || true
    done
    status=1
fi
if (( status == 0 )); then
    echo "asan.sh: no AddressSanitizer or LeakSanitizer reports; every test passed"
fi
exit "$status"
