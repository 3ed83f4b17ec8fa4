#!/usr/bin/env bash
# The NEON kernels for real on an x86 machine: cross-build the engine's kernel tests for
# aarch64 and run them under qemu (user mode), where `Kernel::Neon` is the SIMD set they check
# bit for bit against the scalar reference (rust-engine/tests/kernels_simd.rs: random shapes,
# every token count up to 9, the edge cases, committed models through the forward pass).
# Installs what it needs where missing: the Rust target,
# an aarch64 linker (gcc-aarch64-linux-gnu) and qemu-user (apt, as root). .ci/run calls it.
#
#   scripts/neon.sh [extra cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
need=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  echo "neon.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# Release: the proptest cases run through an emulator, and the tests check numbers, not speed.
cargo test --release -p xval-engine --target "$target" --test kernels_simd "$@"
