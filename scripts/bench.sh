#!/usr/bin/env bash
# Regenerate docs/performance.md: `harness bench` (engine against the built-in llama.cpp, and
# against a bitnet.cpp tree when BITNET_TREE is set) on the fixtures, on freshly generated
# models, and on the 2B-4T shape with BENCH_2B4T=1 (a 1.1-1.2 GB model per format, generated into
# target/bench/; only KERNELS_2B4T, default `auto`, runs there: the scalar engine takes minutes
# per run at that size). Every figure in the page comes from this script's run; nothing is
# typed by hand.
#
# With LLAMA_TREE (a natively built llama.cpp: scripts/llama-native.sh) also against it, on the
# 2B-4T shape with the last set of KERNELS_2B4T (the built-in llama.cpp is compiled for
# x86-64-v3; the issue's decode target names a native build).
# Usage: scripts/bench.sh            (THREADS=2 KERNELS="scalar auto" by default)
#        BITNET_TREE=/path/to/BitNet LLAMA_TREE=$(scripts/llama-native.sh) BENCH_2B4T=1 scripts/bench.sh
# Run it on an idle machine: every ratio is measured in one process, but a busy machine still
# shifts the absolute figures.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
threads="${THREADS:-2}"
kernels="${KERNELS:-scalar auto}"
kernels_2b4t="${KERNELS_2B4T:-auto}"
work="$root/target/bench"
mkdir -p "$work"
cargo build --quiet --release -p xval-harness
h="$root/target/release/harness"

models=(
    "fixtures/models/bitnet-tq2_0.gguf|fixture, 2 layers, 256/512, TQ2_0"
    "fixtures/models/bitnet-i2_s.gguf|fixture, 2 layers, 256/512, I2_S"
    "fixtures/trained/bitnet-tq2_0.gguf|trained fixture, TQ2_0"
)
"$h" fixtures gen --out "$work/fresh-tq2_0.gguf" --format tq2_0 --layers 8 --n-embd 1024 --n-ff 2816 \
    --heads 8 --kv-heads 2 --seed 4242 >/dev/null
"$h" fixtures gen --out "$work/fresh-i2_s.gguf" --format i2_s --layers 8 --n-embd 1024 --n-ff 2816 \
    --heads 8 --kv-heads 2 --seed 4243 >/dev/null
"$h" fixtures gen --out "$work/fresh-tq1_0.gguf" --format tq1_0 --layers 8 --n-embd 1024 --n-ff 2816 \
    --heads 8 --kv-heads 2 --seed 4244 >/dev/null
models+=(
    "$work/fresh-tq2_0.gguf|generated here, 8 layers, 1024/2816, GQA 8/2, TQ2_0"
    "$work/fresh-i2_s.gguf|generated here, 8 layers, 1024/2816, GQA 8/2, I2_S"
    "$work/fresh-tq1_0.gguf|generated here, 8 layers, 1024/2816, GQA 8/2, TQ1_0"
)
if [[ "${BENCH_2B4T:-0}" == 1 ]]; then
    for f in tq2_0 i2_s tq1_0; do
        [[ -f "$work/2b4t-$f.gguf" ]] ||
            "$h" fixtures synth --shape 2b-4t --format "$f" --arch bitnet --out "$work/2b4t-$f.gguf" >/dev/null
        models+=("$work/2b4t-$f.gguf|2B-4T shape (30 layers, 2560/6912, vocab 128256), $f")
    done
fi
peers=(builtin)
[[ -n "${BITNET_TREE:-}" ]] && peers+=("dir:$BITNET_TREE")
[[ -n "${LLAMA_TREE:-}" ]] && peers+=("dir:$LLAMA_TREE")

rows=()
for entry in "${models[@]}"; do
    model="${entry%%|*}"
    what="${entry#*|}"
    [[ -f "$model" ]] || { echo "bench.sh: $model: missing, skipped" >&2; continue; }
    for peer in "${peers[@]}"; do
        sets=$kernels
        [[ "$model" == */2b4t-* ]] && sets=$kernels_2b4t
        if [[ -n "${LLAMA_TREE:-}" && "$peer" == "dir:$LLAMA_TREE" ]]; then
            [[ "$model" == */2b4t-* ]] || continue
            sets=${kernels_2b4t##* }
        fi
        # The prompt's outputs: the last position (as llama-bench), and on the 2B-4T shape
        # against the built-in llama.cpp also every position (as a comparison evaluates).
        outs="last"
        [[ "$model" == */2b4t-* && "$peer" == builtin ]] && outs="last all"
        for kernel in $sets; do
          for out in $outs; do
            echo "bench.sh: $model vs $peer, kernel $kernel, prompt outputs $out" >&2
            extra=()
            [[ "$out" == all ]] && extra=(--all-logits)
            json=$("$h" bench "$model" --vs "$peer" --threads "$threads" --kernel "$kernel" \
                "${extra[@]}" --json) || {
                echo "bench.sh: $model vs $peer failed" >&2
                continue
            }
            rows+=("$(python3 - "$json" "$what" "$peer" <<'EOF'
import json, sys
j, what, peer = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
e, p, r = j["engine"], j["peer"], j["ratio"]
print(f"| {what} | {e['kernel']} ({e['profile']}) | {j['prefill_outputs']} | {e['pp_tok_s']:.1f} | {e['tg_tok_s']:.1f} | "
      f"{p['name'].replace('|', '/')} | {p['pp_tok_s']:.1f} | {p['tg_tok_s']:.1f} | "
      f"{r['pp']:.2f}x | {r['tg']:.2f}x | {j['decode_gb_s']:.2f} of {j['bandwidth_gb_s']:.1f} "
      f"({100 * j['decode_gb_s'] / j['bandwidth_gb_s']:.0f}%) |")
EOF
)")
          done
        done
    done
done

# On the 2B-4T shape: what a comparison costs beside the two runs it needs (the phases its
# receipt times), and the peak memory of `harness run` against the file's size.
costs=()
if [[ "${BENCH_2B4T:-0}" == 1 ]]; then
    for f in tq2_0 i2_s tq1_0; do
        model="$work/2b4t-$f.gguf"
        echo "bench.sh: compare and run costs, $model" >&2
        /usr/bin/time -f "%e" -o "$work/compare.time" "$h" compare "$model" --threads "$threads" \
            --oracle-threads "$threads" --out "$work/compare-$f.json" >/dev/null 2>&1 || true
        /usr/bin/time -f "%M" -o "$work/run.rss" "$h" run "$model" -p "The quick brown fox" -n 16 \
            --threads "$threads" >/dev/null 2>&1 || true
        costs+=("$(python3 - "$work/compare-$f.json" "$work/compare.time" "$work/run.rss" "$model" "$f" <<'EOF'
import json, os, sys
r = json.load(open(sys.argv[1]))
t = r["timings"]
wall = float(open(sys.argv[2]).read().split()[-1])
rss = int(open(sys.argv[3]).read().split()[-1]) * 1024
size = os.path.getsize(sys.argv[4])
runs = t["engine_prefill"] + t["engine_decode"] + t["oracle_prefill"] + t["oracle_decode"]
extra = {k: v for k, v in t.items() if not k.startswith(("engine_prefill", "engine_decode", "oracle_"))}
print(f"| {sys.argv[5].upper()} | {r['engine']['kernels'][0] if isinstance(r['engine'].get('kernels'), list) else ''} | {wall:.1f} | "
      f"{runs:.1f} | {wall / runs:.2f}x | "
      + ", ".join(f"{k} {v:.1f}" for k, v in sorted(extra.items())) +
      f" | {rss / 1e9:.2f} GB of {size / 1e9:.2f} GB ({rss / size:.2f}x) |")
EOF
)")
    done
fi

# The ternary GEMV of the 2B-4T shape against ggml's kernel through FFI, one thread, one process
# (criterion; cpp-sys/benches/ternary_gemv.rs).
echo "bench.sh: ternary GEMV (criterion)" >&2
rm -rf "$root/target/criterion/ternary_gemv_"*
cargo bench --quiet -p xval-cpp-sys --bench ternary_gemv >&2
gemv=$(python3 - "$root/target/criterion" <<'EOF'
import json, os, sys
base = sys.argv[1]
def median_us(group, bench):
    with open(os.path.join(base, group, bench, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"] / 1e3
for shape, what in [("2560x6912", "6912 rows of 2560 (ffn_up, ffn_gate)"),
                    ("6912x2560", "2560 rows of 6912 (ffn_down)")]:
    g = f"ternary_gemv_{shape}"
    ggml = median_us(g, "ggml_tq2_0")
    read = median_us(g, "read_weights")
    print(f"| {what} | TQ2_0 | (only reading the weights) | {read:.1f} | {ggml:.1f} | {ggml / read:.2f}x | 1.00x |")
    widest = median_us(g, "read_weights_widest")
    print(f"| {what} | TQ2_0 | (only reading, widest loads) | {widest:.1f} | {ggml:.1f} | {ggml / widest:.2f}x | {widest / read:.2f}x |")
    for ty in ["tq2_0", "i2_s"]:
        for kernel in ["scalar", "avx2", "avx512", "neon"]:
            path = os.path.join(base, g, f"engine_{ty}", kernel)
            if not os.path.isdir(path):
                continue
            us = median_us(g, os.path.join(f"engine_{ty}", kernel))
            print(f"| {what} | {ty.upper()} | {kernel} | {us:.1f} | {ggml:.1f} | {ggml / us:.2f}x | {us / read:.2f}x |")
EOF
)

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|avx512f|avx512_vnni|avx512vbmi|f16c|fma' | sort | tr '\n' ' ')
{
    cat <<EOF
# Performance

Written by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d) (commit $(git rev-parse --short HEAD)); do not
edit by hand. Machine: ${cpu}, $(nproc) cores, ${flags% }; ${threads} threads for both sides.

Each row is one \`harness bench MODEL --vs PEER --threads ${threads} --kernel K --json\`: the engine and
the peer run the same 64 prompt ids (one batch) and 16 greedy decode steps, no taps, medians of
3 runs, in one process and one sitting. Prompt outputs \`last\`: both sides compute the logits
of the last prompt position only, as \`llama-bench\` and \`llama-cli\` do (the output projection
multiplies one row); \`all\` (\`--all-logits\`): of every position, as a comparison needs. The
peer runs in the harness's
isolated worker with llama.cpp's speed defaults (fused ops where the tree's ggml has them,
which bitnet.cpp's fork does not; F16 KV cache; the model memory-mapped, its default); the
engine holds the model as \`harness bench\` does by default (\`--load resident\`: read into
memory on huge pages where the OS has them); the built-in
llama.cpp is compiled for x86-64-v3, so a natively built tree (\`--vs dir:PATH\`) can be faster.
${LLAMA_TREE:+The \`llama.cpp tree\` rows are that source built natively (\`scripts/llama-native.sh\`:
the same llama.cpp the built-in oracle is compiled from, \`GGML_NATIVE\`, shared libraries), run on
the 2B-4T shape with the last kernel set only.
}Decode GB/s is the weights one decode step reads (every projection, the lm_head, the norms, one
embedding row) times the decode rate, against the read bandwidth \`harness bench\` measures with
the same threads (best of 5 passes over 1 GiB). Kernels: \`${kernels}\`; on the 2B-4T shape
only \`${kernels_2b4t}\` (the scalar engine needs minutes per run there).

| model | engine kernel (profile) | prompt outputs | engine pp tok/s | engine tg tok/s | peer | peer pp tok/s | peer tg tok/s | pp ratio | tg ratio | decode GB/s of read bandwidth |
|---|---|---|---:|---:|---|---:|---:|---:|---:|---|
EOF
    printf '%s\n' "${rows[@]}"
    if ((${#costs[@]})); then
        cat <<EOF

## Comparison cost and memory on the 2B-4T shape

\`harness compare MODEL --threads ${threads} --oracle-threads ${threads}\` (default prompt, 16
decode steps, every tap, the built-in llama.cpp, the default kernel set) timed whole, against
the four phases that are the two runs themselves (engine prefill and decode without the
comparison's extras, oracle prefill and decode with its taps), from the receipt's \`timings\`;
the rest is loading, the engine's op-level replay, the noise twin (a second engine run) and the
judging. Peak RSS: \`harness run MODEL -p "The quick brown fox" -n 16\` under \`/usr/bin/time\`
(the weights are mapped, not copied).

| model | kernel | compare s | engine + oracle runs s | ratio | the rest (s) | peak RSS of \`run\` against the file |
|---|---|---:|---:|---:|---|---|
EOF
        printf '%s\n' "${costs[@]}"
    fi
    cat <<EOF

## Ternary GEMV against ggml, one thread

\`cargo bench -p xval-cpp-sys --bench ternary_gemv\` (criterion, medians): one token through the
2B-4T shape's ternary projections in one process, one thread each side. ggml: the activations
quantized to Q8_K by the CPU backend's \`from_float\`, then its \`vec_dot\` for TQ2_0 per row
(\`ggml_compute_forward_mul_mat\`'s work for one token, without its threading). Engine:
\`quant::matmul\` with the same Q8_K quantization (TQ2_0, and I2_S under the ggml profile) and
the kernel set named, every iteration on a one-thread rayon pool's thread and timed there
(ggml's side is called in place; handing each call to the pool's thread cost 70-80 us a call
on this kind of machine, which earlier tables included); every set's output is checked
bit-identical to scalar and scalar's against ggml's (within 1e-5 of the largest output: ggml's
AVX2 epilogue fuses the block scales in another order) before timing. Ratio: ggml's time over
the engine's (above 1: the engine is faster). The 4.4 MB of weights do not fit L2 and are read
from L3 on every call; the first row of each shape only reads the TQ2_0 matrix's bytes on the
same thread (\`read_weights\`: each 64-byte line's words added, the loop \`harness bench\` measures
bandwidth with), the second with 512-bit loads where the CPU has them (\`read_weights_widest\`):
how fast a kernel reading them could at best be here. The last column is each row's time over
the first (I2_S reads 3% fewer bytes).

| weights | type | engine kernel | engine us | ggml TQ2_0 us | ratio | of only reading |
|---|---|---|---:|---:|---:|---:|
EOF
    printf '%s\n' "$gemv"
} >"$root/docs/performance.md"
echo "bench.sh: wrote docs/performance.md (${#rows[@]} rows)" >&2
