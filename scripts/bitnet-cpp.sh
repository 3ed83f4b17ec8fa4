#!/usr/bin/env bash
# A bitnet.cpp oracle in one command: builds the bitnet.cpp source bundle shipped beside this
# project (../shared/third_party, built by ../shared/tools/build-bitnet-cpp.sh: microsoft/BitNet
# c82b5e6 with its llama.cpp fork 406a5036; clang and cmake, a few minutes on 2 cores) into
# target/bitnet-cpp/ and prints the tree to pass as `--oracle dir:TREE` (or `BITNET_CPP_DIR`).
# A finished build is reused. Outside this project's machines there is no bundle: build your
# own checkout as the README says and point --oracle dir: at it.
# Usage: scripts/bitnet-cpp.sh [DEST]     (DEST default: target/bitnet-cpp)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
builder="$root/../shared/tools/build-bitnet-cpp.sh"
dest=${1:-$root/target/bitnet-cpp}
if [ ! -x "$builder" ]; then
  echo "no bitnet.cpp bundle at $builder (it exists on this project's machines only);" >&2
  echo "build microsoft/BitNet yourself (README, 'External build trees') and use --oracle dir:PATH" >&2
  exit 2
fi
mkdir -p "$dest"
"$builder" "$dest" | tail -n 1
