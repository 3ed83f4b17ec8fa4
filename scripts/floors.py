"""Summarise compare receipts into op-level noise floors per oracle numerics and tap class,
prompt and decode steps apart, with the clean comparisons' largest metric/limit ratio (see
scripts/measure-floors.sh)."""
import collections
import glob
import json
import os
import sys

CLASS = {"attn_norm": "norm", "attn_sub_norm": "norm", "ffn_norm": "norm", "ffn_sub_norm": "norm",
         "result_norm": "norm", "kqv_out": "attn", "ffn_sub_out": "act", "ffn_inp": "residual",
         "l_out": "residual", "result_output": "logits"}


def tap_class(name):
    return CLASS.get(name.rsplit("-", 1)[0] if "-" in name else name, "proj")


def main(d):
    prompt = collections.defaultdict(lambda: collections.defaultdict(float))
    decode = collections.defaultdict(lambda: collections.defaultdict(float))
    worst = collections.defaultdict(float)
    runs = collections.Counter()
    fails = collections.Counter()
    for f in sorted(glob.glob(os.path.join(d, "*.json"))):
        r = json.load(open(f))
        if r.get("schema_version") != 2 or not r["pairing"]["matched"]:
            continue
        n = r["pairing"]["oracle"]
        key = f"{r['oracle']['kind']:10s} {n['profile']:10s} kv {n['kv']} f16 {n['f16_activations']}"
        runs[key] += 1
        fails[key] += not r["summary"]["passes"]
        if r["summary"]["worst"]:
            worst[key] = max(worst[key], r["summary"]["worst"]["ratio"])
        for t in r["taps"]:
            for p in t.get("replay") or []:
                prompt[key][t["class"]] = max(prompt[key][t["class"]], p["nmse"])
        for s in r["decode"]["steps"]:
            for name, m in s["tap_replay"].items():
                c = tap_class(name)
                decode[key][c] = max(decode[key][c], m["nmse"])
    for key in sorted(runs):
        print(f"{key}: {runs[key]} receipts, {fails[key]} failing, worst metric/limit {worst[key]:.3g}")
        for c in sorted(set(prompt[key]) | set(decode[key])):
            print(f"  {c:9s} replay max NMSE prompt {prompt[key][c]:.3g}   decode steps {decode[key][c]:.3g}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/floors")
