#!/usr/bin/env bash
# Re-measure the noise floors behind ci/thresholds.toml: compare every fixture against its live
# oracle (`--oracle auto`: the built-in llama.cpp for the `bitnet` fixtures, the ggml-graph
# oracle for the `bitnet-b1.58` I2_S one) under the matching (`ggml`) profile and the mismatched
# ones, on the prompts of ci/floor-prompts.txt, then summarise per format group and tap class
# (scripts/floors.py).
# Usage: scripts/measure-floors.sh [OUTDIR]   (needs python3)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/floors}
mkdir -p "$out"
cargo build -q --bin harness
for f in bitnet-tq2_0 bitnet-tq1_0 bitnet-f32 bitnet-b1.58-i2_s; do
  for p in ggml f32 bitnet-cpp; do
    # Exit 1 (divergence) is expected for the mismatched profiles.
    ./target/debug/harness compare "fixtures/models/$f.gguf" --prompts ci/floor-prompts.txt \
      --profile "$p" --out "$out/$f.$p.json" --format json >/dev/null || [ $? -eq 1 ]
  done
done
python3 scripts/floors.py "$out"
