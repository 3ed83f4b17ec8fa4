#!/usr/bin/env bash
# A natively built mainline llama.cpp in one command: the same llama.cpp source the built-in
# oracle is compiled from (the registry crate llama-cpp-sys-2 that Cargo.lock pins), built as
# shared libraries with the CPU's own flags (GGML_NATIVE; the built-in one is compiled for
# x86-64-v3) into target/llama-native/, and the tree printed to pass as `--vs dir:TREE` or
# `--oracle dir:TREE`. What the issue's speed targets call "natively built llama.cpp".
# A finished build is reused. About 4 minutes on 2 cores (only the `llama` library target).
# Usage: scripts/llama-native.sh [DEST]     (DEST default: target/llama-native)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/target/llama-native}
if [ -f "$dest/build/bin/libllama.so" ] && [ -f "$dest/include/llama.h" ]; then
  echo "$dest"
  exit 0
fi
cd "$root"
# The crate's own directory from cargo (fetching it if this checkout has not yet).
manifest=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == "llama-cpp-sys-2"))')
src="$(dirname "$manifest")/llama.cpp"
[ -f "$src/CMakeLists.txt" ] || { echo "no llama.cpp source at $src" >&2; exit 2; }
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
cp -r "$src" "$dest"
cmake -S "$dest" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_COMMON=OFF >&2
cmake --build "$dest/build" -j "$(nproc)" --target llama >&2
echo "$dest"
