#!/usr/bin/env bash
# Tries the verdicts on models the thresholds were not tuned on: generates models of other
# shapes, depths and formats, compares each clean against every oracle that runs it (the
# built-in llama.cpp or the ggml-graph oracle, and bitnet.cpp when BITNET_TREE names a built
# tree) on the nine prompts of ci/floor-prompts.txt, then injects faults (a 1% scale error in
# one projection at the first, middle and last layer; decode attention one KV position short)
# and checks that each is caught with the right first divergence. Prints a table per model:
# clean exit codes and the largest metric/limit ratio, fault exit codes, first divergence and
# the fault's ratio to its limit. docs/thresholds.md quotes its output.
#
# Usage: scripts/verdict-eval.sh OUT_DIR [SET]
#   SET: calibration (the fixtures and three models), validation (fresh models), 2b4t (the
#   2B-4T-shaped synthetic models, slow with the scalar kernels), all [default].
# Env: HARNESS (the binary, default target/debug/harness), BITNET_TREE (bitnet.cpp tree),
#      STEPS (decode steps, default 16), PROMPTS (default ci/floor-prompts.txt),
#      RESUME=1 (keep OUT_DIR's receipts: a run whose receipt exists is not run again, its exit
#      code read back from the receipt; for an interrupted or extended evaluation).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: verdict-eval.sh OUT_DIR [SET]}
set_name=${2:-all}
H=${HARNESS:-target/debug/harness}
steps=${STEPS:-16}
prompts=${PROMPTS:-ci/floor-prompts.txt}
mkdir -p "$out/models" "$out/receipts"
log="$out/runs.tsv"
: > "$log"

gen() { # name, gen args...
  local name=$1; shift
  [ -f "$out/models/$name.gguf" ] || "$H" fixtures gen --out "$out/models/$name.gguf" "$@" 2>/dev/null
}

# run NAME MODEL ORACLE KIND(clean|fault) EXPECT ARGS...
run() {
  local name=$1 model=$2 oracle=$3 kind=$4 expect=$5; shift 5
  local r="$out/receipts/$name.json"
  local code=0
  if [ -n "${RESUME:-}" ] && { [ -f "$r" ] || [ -f "${r%.json}.0.json" ]; }; then
    # One receipt, or one per prompt (NAME.0.json, NAME.1.json, ...).
    code=$(python3 -c 'import glob,json,sys; fs=glob.glob(sys.argv[1]) or glob.glob(sys.argv[2]); print(0 if all(json.load(open(f))["summary"]["passes"] for f in fs) else 1)' "$r" "${r%.json}.[0-9]*.json")
  else
    "$H" compare "$model" --oracle "$oracle" --out "$r" "$@" >/dev/null 2>"$out/receipts/$name.err" || code=$?
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$model" "$oracle" "$kind" "$expect" "$code" >> "$log"
}

oracles_for() { # model arch: the live oracles that run it
  local arch=$1
  if [ "$arch" = bitnet ]; then
    echo builtin
    [ -n "${BITNET_TREE:-}" ] && echo "dir:$BITNET_TREE"
  else
    echo ggml-graph
  fi
  return 0
}

evaluate() { # name path arch layers
  local name=$1 model=$2 arch=$3 layers=$4
  for o in $(oracles_for "$arch"); do
    local tag; tag=$(echo "$o" | sed 's/dir:.*/bitnet.cpp/')
    run "$name.$tag.clean" "$model" "$o" clean 0 --prompts "$prompts" --steps "$steps"
    local mid=$(( layers / 2 )) last=$(( layers - 1 ))
    for l in 0 $mid $last; do
      run "$name.$tag.scale-q$l" "$model" "$o" "fault:Qcur-$l" 1 \
        --prompt "The quick brown fox jumps over the lazy dog." --steps 4 \
        --fault "scale:blk.$l.attn_q.weight:1.01"
      run "$name.$tag.scale-down$l" "$model" "$o" "fault:ffn_down-$l" 1 \
        --prompt "The quick brown fox jumps over the lazy dog." --steps 4 \
        --fault "scale:blk.$l.ffn_down.weight:1.01"
    done
    run "$name.$tag.kv" "$model" "$o" "fault:kqv_out-0@step0" 1 \
      --prompt "The quick brown fox jumps over the lazy dog." --steps 4 --fault kv-one-short
  done
}

if [ "$set_name" = calibration ] || [ "$set_name" = all ]; then
  for f in bitnet-tq2_0 bitnet-tq1_0 bitnet-f32; do
    evaluate "fx-$f" "fixtures/models/$f.gguf" bitnet 2
  done
  evaluate fx-b158-i2_s fixtures/models/bitnet-b1.58-i2_s.gguf bitnet-b1.58 3
  [ -f fixtures/models/bitnet-i2_s.gguf ] && evaluate fx-bitnet-i2_s fixtures/models/bitnet-i2_s.gguf bitnet 2
  # The trained fixtures (recorded artifacts: the thresholds were not tuned on them either).
  for t in bitnet-b1.58-i2_s:bitnet-b1.58 bitnet-b1.58-tq2_0:bitnet-b1.58 bitnet-i2_s:bitnet bitnet-tq2_0:bitnet; do
    f=${t%%:*}; arch=${t##*:}
    [ -f "fixtures/trained/$f.gguf" ] && evaluate "tr-$f" "fixtures/trained/$f.gguf" "$arch" 4
  done
  gen c1 --arch bitnet --format tq2_0 --layers 3 --n-embd 512 --heads 8 --kv-heads 2 --n-ff 1536 --seed 11
  evaluate c1 "$out/models/c1.gguf" bitnet 3
  gen c2 --arch bitnet-b1.58 --format i2_s --layers 12 --n-embd 256 --heads 4 --kv-heads 1 --n-ff 768 --seed 12
  evaluate c2 "$out/models/c2.gguf" bitnet-b1.58 12
  gen c3 --arch bitnet --format i2_s --layers 6 --n-embd 512 --heads 8 --kv-heads 4 --n-ff 1024 --seed 13
  evaluate c3 "$out/models/c3.gguf" bitnet 6
fi

if [ "$set_name" = validation ] || [ "$set_name" = all ]; then
  # Other shapes, depths (4-32 layers), GQA ratios 1/2/4/8, FF widths, tied/untied, formats.
  gen v1 --arch bitnet --format tq2_0 --layers 4 --n-embd 512 --heads 8 --kv-heads 8 --n-ff 1536 --seed 21
  evaluate v1 "$out/models/v1.gguf" bitnet 4
  gen v2 --arch bitnet-b1.58 --format i2_s --layers 8 --n-embd 512 --heads 8 --kv-heads 4 --n-ff 1280 --untied --seed 22
  evaluate v2 "$out/models/v2.gguf" bitnet-b1.58 8
  gen v3 --arch bitnet --format tq1_0 --layers 16 --n-embd 256 --heads 4 --kv-heads 1 --n-ff 768 --seed 23
  evaluate v3 "$out/models/v3.gguf" bitnet 16
  # Mainline's `bitnet` graph always uses the tied embedding (it refuses an output.weight):
  # untied models are `bitnet-b1.58`, run by the ggml-graph oracle.
  gen v4 --arch bitnet --format f16 --layers 6 --n-embd 512 --heads 16 --kv-heads 2 --n-ff 1024 --seed 24
  evaluate v4 "$out/models/v4.gguf" bitnet 6
  gen v5 --arch bitnet-b1.58 --format i2_s --layers 32 --n-embd 256 --heads 8 --kv-heads 1 --n-ff 512 --seed 25
  evaluate v5 "$out/models/v5.gguf" bitnet-b1.58 32
  gen v6 --arch bitnet --format tq2_0 --layers 24 --n-embd 256 --heads 2 --kv-heads 1 --n-ff 768 --seed 26
  evaluate v6 "$out/models/v6.gguf" bitnet 24
  gen v7 --arch bitnet --format i2_s --layers 12 --n-embd 512 --heads 8 --kv-heads 2 --n-ff 1536 --seed 27
  evaluate v7 "$out/models/v7.gguf" bitnet 12
  gen v8 --arch bitnet-b1.58 --format tq2_0 --layers 30 --n-embd 256 --heads 4 --kv-heads 4 --n-ff 512 --gain 2.5 --seed 28
  evaluate v8 "$out/models/v8.gguf" bitnet-b1.58 30
  gen v9 --arch bitnet-b1.58 --format tq1_0 --layers 6 --n-embd 768 --heads 12 --kv-heads 6 --n-ff 2048 --untied --seed 29
  evaluate v9 "$out/models/v9.gguf" bitnet-b1.58 6
fi

if [ "$set_name" = 2b4t ] || [ "$set_name" = all ]; then
  # The official 2B-4T shapes with random weights: TQ2_0 as `bitnet` for the built-in oracle,
  # I2_S as `bitnet-b1.58` for the ggml-graph oracle. Fewer prompts and steps: the scalar
  # engine runs the 30 layers at about 1 token/s.
  [ -f "$out/models/s-tq2.gguf" ] || "$H" fixtures synth --shape 2b-4t --format tq2_0 --arch bitnet --out "$out/models/s-tq2.gguf" 2>/dev/null
  [ -f "$out/models/s-i2s.gguf" ] || "$H" fixtures synth --shape 2b-4t --format i2_s --out "$out/models/s-i2s.gguf" 2>/dev/null
  head -3 "$prompts" > "$out/prompts3.txt"
  # I2_S as `bitnet` too: what the bundled bitnet.cpp runs (and the built-in oracle through
  # the lossless TQ2_0 transcode).
  [ -f "$out/models/s-i2b.gguf" ] || "$H" fixtures synth --shape 2b-4t --format i2_s --arch bitnet --out "$out/models/s-i2b.gguf" 2>/dev/null
  for m in s-tq2:bitnet s-i2s:bitnet-b1.58 s-i2b:bitnet; do
    name=${m%%:*}; arch=${m##*:}
    for o in $(oracles_for "$arch"); do
      tag=$(echo "$o" | sed 's/dir:.*/bitnet.cpp/')
      run "$name.$tag.clean" "$out/models/$name.gguf" "$o" clean 0 --prompts "$out/prompts3.txt" --steps 4
      run "$name.$tag.scale-q15" "$out/models/$name.gguf" "$o" "fault:Qcur-15" 1 --prompt "The quick brown fox" --steps 2 --fault "scale:blk.15.attn_q.weight:1.01"
      run "$name.$tag.kv" "$out/models/$name.gguf" "$o" "fault:kqv_out-0@step0" 1 --prompt "The quick brown fox" --steps 2 --fault kv-one-short
    done
  done
fi

python3 scripts/verdict-eval.py "$out"
