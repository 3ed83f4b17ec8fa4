#!/usr/bin/env bash
# Re-measure the op-level noise floors behind ci/thresholds.toml, per oracle numerics: every
# fixture (and a few generated models of other shapes) against every live oracle that runs it,
# under the profile that mirrors the oracle, on the prompts of ci/floor-prompts.txt with 16
# decode steps: the built-in llama.cpp with an F32 and with an F16 KV cache, the ggml-graph
# oracle for `bitnet-b1.58`, and the bitnet.cpp tree $BITNET_TREE when set (F16 KV, its own
# F16 matmuls). scripts/floors.py summarises per numerics and tap class, prompt and decode
# steps apart.
# Usage: scripts/measure-floors.sh [OUTDIR]   (needs python3)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/floors}
mkdir -p "$out/models"
H=${HARNESS:-target/debug/harness}
[ -x "$H" ] || cargo build -q --bin harness
cmp() { # model, tag, args...
  local m=$1 tag=$2; shift 2
  "$H" compare "$m" --prompts ci/floor-prompts.txt --steps 16 --out "$out/$tag.json" --format json "$@" >/dev/null || true
}
"$H" fixtures gen --out "$out/models/g1.gguf" --arch bitnet --format tq2_0 --layers 4 --n-embd 512 --heads 8 --kv-heads 2 --n-ff 1536 --seed 101 2>/dev/null
"$H" fixtures gen --out "$out/models/g2.gguf" --arch bitnet --format i2_s --layers 4 --n-embd 512 --heads 8 --kv-heads 4 --n-ff 1024 --seed 102 2>/dev/null
"$H" fixtures gen --out "$out/models/g3.gguf" --arch bitnet-b1.58 --format i2_s --layers 6 --n-embd 256 --heads 4 --kv-heads 1 --n-ff 768 --seed 103 2>/dev/null
for m in fixtures/models/bitnet-tq2_0.gguf fixtures/models/bitnet-tq1_0.gguf fixtures/models/bitnet-f32.gguf \
         $( [ -f fixtures/models/bitnet-i2_s.gguf ] && echo fixtures/models/bitnet-i2_s.gguf ) \
         fixtures/trained/bitnet-i2_s.gguf fixtures/trained/bitnet-tq2_0.gguf \
         "$out/models/g1.gguf" "$out/models/g2.gguf"; do
  n=$(basename "$m" .gguf)
  case $m in fixtures/trained/*) n=trained-$n ;; esac
  cmp "$m" "$n.builtin-f32kv" --oracle builtin
  cmp "$m" "$n.builtin-f16kv" --oracle builtin --oracle-kv-type f16
  [ -n "${BITNET_TREE:-}" ] && cmp "$m" "$n.bitnet.cpp" --oracle "dir:$BITNET_TREE"
done
for m in fixtures/models/bitnet-b1.58-i2_s.gguf fixtures/trained/bitnet-b1.58-i2_s.gguf \
         fixtures/trained/bitnet-b1.58-tq2_0.gguf "$out/models/g3.gguf"; do
  n=$(basename "$m" .gguf)
  case $m in fixtures/trained/*) n=trained-$n ;; esac
  cmp "$m" "$n.ggml-graph-f32kv" --oracle ggml-graph
  cmp "$m" "$n.ggml-graph-f16kv" --oracle ggml-graph --oracle-kv-type f16
done
python3 scripts/floors.py "$out"
