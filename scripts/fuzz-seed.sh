#!/usr/bin/env bash
# Seed the `gguf_parse` fuzz corpus (fuzz/corpus/gguf_parse/) with the repository's GGUF files:
# fixtures/models/*.gguf (the synthetic models, when this checkout has them) and
# fixtures/external/*.gguf (written by gguf-py), plus a few small synthetic files that reach the
# bitnet.cpp dialect (I2_S), MXFP4 and a v2 header (written by the fuzz crate's stable build,
# `gguf_parse --write-seeds`; skipped with XVAL_FUZZ_SEED_SYNTHETIC=0). Existing entries are kept.
# Usage: scripts/fuzz-seed.sh [corpus-dir]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
corpus="${1:-$root/fuzz/corpus/gguf_parse}"
mkdir -p "$corpus"

copied=0
for dir in fixtures/models fixtures/external; do
    if [[ ! -d "$root/$dir" ]]; then
        echo "fuzz-seed: $dir: not in this checkout, skipped"
        continue
    fi
    shopt -s nullglob
    files=("$root/$dir"/*.gguf)
    shopt -u nullglob
    if (( ${#files[@]} == 0 )); then
        echo "fuzz-seed: $dir: no .gguf files"
        continue
    fi
    for f in "${files[@]}"; do
        # Prefix with the folder so that equal names from two folders do not collide.
        cp -f "$f" "$corpus/$(basename "$dir")-$(basename "$f")"
        copied=$((copied + 1))
    done
done

if [[ "${XVAL_FUZZ_SEED_SYNTHETIC:-1}" != 0 ]]; then
    cargo run --quiet --release --manifest-path "$root/fuzz/Cargo.toml" --bin gguf_parse -- \
        --write-seeds "$corpus"
    copied=$((copied + 3))
fi

if (( copied == 0 )); then
    echo "fuzz-seed: no GGUF files found under fixtures/" >&2
    exit 1
fi
echo "fuzz-seed: copied $copied file(s) into $corpus ($(ls "$corpus" | wc -l) entries in total)"
