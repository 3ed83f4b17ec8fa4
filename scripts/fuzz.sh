#!/usr/bin/env bash
# Fuzzing xval's readers with cargo-fuzz (libFuzzer, AddressSanitizer): seeds, runs, records.
#
#   scripts/fuzz.sh seed                 write every target's seeds into fuzz/corpus/<target>/
#   scripts/fuzz.sh run TARGET RUNS      one libFuzzer run of RUNS executions over the target's corpus;
#                                        appends its figures to fuzz/runs.tsv (a crash stops the run,
#                                        is kept in fuzz/artifacts/TARGET/ and makes the script fail)
#   scripts/fuzz.sh cmin TARGET          minimise the target's corpus (libFuzzer -merge)
#   scripts/fuzz.sh table                fuzz/runs.tsv summed per target, as the markdown table of
#                                        docs/fuzzing.md
#   scripts/fuzz.sh replay               the stable runner (no nightly) over every corpus and every
#                                        committed regression input: what CI runs
#
# Targets: gguf_parse gguf_model tokenizer receipt thresholds (fuzz/README.md says what each
# reaches). `run` needs nightly and `cargo install cargo-fuzz`; FUZZ_JOBS=N runs N workers
# (each counts its own RUNS). Environment: FUZZ_RSS_MB (default 2048), FUZZ_TIMEOUT_S (10),
# FUZZ_SANITIZER (default none: the fuzzed code is safe Rust, built with debug assertions and
# overflow checks, and runs ten times faster without AddressSanitizer; `address` turns it on).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz="$root/fuzz"
targets=(gguf_parse gguf_model tokenizer receipt thresholds)

# Largest input libFuzzer may build, per target: above the largest seed, small enough to keep
# executions fast.
max_len() {
    case "$1" in
        gguf_parse) echo 65536 ;;
        gguf_model) echo 131072 ;;
        tokenizer) echo 4096 ;;
        receipt) echo 32768 ;;
        thresholds) echo 8192 ;;
        *) echo "fuzz.sh: unknown target '$1' (one of: ${targets[*]})" >&2; exit 2 ;;
    esac
}

dict() {
    case "$1" in
        gguf_parse | gguf_model) echo "$fuzz/gguf.dict" ;;
        receipt) echo "$fuzz/receipt.dict" ;;
        thresholds) echo "$fuzz/thresholds.dict" ;;
        tokenizer) echo "$fuzz/tokenizer.dict" ;;
    esac
}

stable_bin() {
    CARGO_TARGET_DIR="$root/target/fuzz-stable" cargo build --quiet --release \
        --manifest-path "$fuzz/Cargo.toml" --bins
    echo "$root/target/fuzz-stable/release"
}

cmd="${1:-}"
case "$cmd" in
    seed)
        bin="$(stable_bin)"
        for t in "${targets[@]}"; do
            "$bin/$t" --write-seeds "$fuzz/corpus/$t"
        done
        # The file gguf-py (the reference writer) wrote, as a GGUF from another implementation.
        cp -f "$root/fixtures/external/gguf_py_sample.gguf" "$fuzz/corpus/gguf_parse/"
        ;;
    run)
        t="${2:?usage: scripts/fuzz.sh run TARGET RUNS}"
        runs="${3:?usage: scripts/fuzz.sh run TARGET RUNS}"
        len="$(max_len "$t")"
        mkdir -p "$fuzz/corpus/$t" "$fuzz/artifacts/$t" "$fuzz/logs"
        log="$fuzz/logs/$t-$(date -u +%Y%m%dT%H%M%SZ).log"
        jobs="${FUZZ_JOBS:-1}"
        extra=()
        if (( jobs > 1 )); then
            extra+=("-jobs=$jobs" "-workers=$jobs")
        fi
        # Built first, so that a build failure is not recorded as a run and the time counts
        # fuzzing only.
        (cd "$fuzz" && cargo +nightly fuzz build -O -s "${FUZZ_SANITIZER:-none}" "$t")
        start=$(date +%s)
        set +e
        (cd "$fuzz" && cargo +nightly fuzz run -O -s "${FUZZ_SANITIZER:-none}" "$t" "corpus/$t" -- \
            -runs="$runs" -max_len="$len" -dict="$(dict "$t")" \
            -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -timeout="${FUZZ_TIMEOUT_S:-10}" \
            -print_final_stats=1 "${extra[@]}") >"$log" 2>&1
        rc=$?
        set -e
        secs=$(( $(date +%s) - start ))
        # With -jobs the workers write fuzz-N.log in the fuzz folder; their figures add up.
        logs=("$log")
        if (( jobs > 1 )); then
            logs=("$fuzz"/fuzz-*.log)
        fi
        execs=$(cat "${logs[@]}" | awk '/stat::number_of_executed_units/ {s += $NF} END {print s + 0}')
        if (( execs == 0 )); then
            # Interrupted (SIGINT) before the final statistics: the last status line counts.
            execs=$(grep -hoE '^#[0-9]+' "${logs[@]}" | tr -d '#' | sort -n | tail -1)
            execs=${execs:-0}
        fi
        peak=$(cat "${logs[@]}" | awk '/stat::peak_rss_mb/ {if ($NF + 0 > m) m = $NF + 0} END {print m + 0}')
        last=$(cat "${logs[@]}" | grep -E '^#[0-9]+' | tail -1 || true)
        cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
        ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
        corp=$(find "$fuzz/corpus/$t" -type f | wc -l)
        if (( jobs > 1 )); then
            cat "$fuzz"/fuzz-*.log >>"$log"
            rm -f "$fuzz"/fuzz-*.log
        fi
        result=ok
        if grep -q 'run interrupted' "$log"; then
            result="ok (interrupted)"
        elif (( rc != 0 )); then
            result="FAILED rc=$rc: $(grep -m1 -E 'panicked at|ERROR: |Test unit written to' "$log" || echo "see $log")"
        fi
        [[ -f "$fuzz/runs.tsv" ]] || printf 'date\ttarget\texecutions\tseconds\tcov\tft\tcorpus\tpeak_rss_mb\tresult\n' >"$fuzz/runs.tsv"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$t" "$execs" \
            "$secs" "${cov:-?}" "${ft:-?}" "$corp" "$peak" "$result" >>"$fuzz/runs.tsv"
        tail -1 "$fuzz/runs.tsv"
        [[ "$result" == ok* ]]
        ;;
    cmin)
        t="${2:?usage: scripts/fuzz.sh cmin TARGET}"
        (cd "$fuzz" && cargo +nightly fuzz cmin -O -s "${FUZZ_SANITIZER:-none}" "$t" "corpus/$t" -- \
            -max_len="$(max_len "$t")" \
            -rss_limit_mb="${FUZZ_RSS_MB:-2048}")
        ;;
    table)
        echo "| target | runs | executions | time | coverage (edges) | features | corpus | peak RSS | findings |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
        for t in "${targets[@]}"; do
            awk -F'\t' -v t="$t" -v corp="$(find "$fuzz/corpus/$t" -type f 2>/dev/null | wc -l)" '
                $2 == t { n++; e += $3; s += $4; if ($5 + 0 > c) c = $5; if ($6 + 0 > f) f = $6;
                          if ($8 + 0 > r) r = $8; if ($9 !~ /^ok/) bad = bad "; " $9 }
                END { if (n) printf "| `%s` | %d | %d | %dm %02ds | %s | %s | %s | %s MB | %s |\n",
                      t, n, e, s / 60, s % 60, c, f, corp, r, (bad == "" ? "none" : substr(bad, 3)) }' \
                "$fuzz/runs.tsv"
        done
        ;;
    replay)
        bin="$(stable_bin)"
        for t in "${targets[@]}"; do
            dirs=()
            [[ -d "$fuzz/corpus/$t" ]] && dirs+=("$fuzz/corpus/$t")
            [[ -d "$fuzz/regressions/$t" ]] && dirs+=("$fuzz/regressions/$t")
            if (( ${#dirs[@]} == 0 )); then
                echo "fuzz.sh: $t: no corpus or regressions" >&2
                exit 1
            fi
            "$bin/$t" "${dirs[@]}"
        done
        ;;
    *)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        [[ -z "$cmd" || "$cmd" == -h || "$cmd" == --help ]] || exit 2
        ;;
esac
