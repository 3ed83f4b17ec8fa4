"""Summarise compare receipts into per-class noise floors (see scripts/measure-floors.sh)."""
import collections
import glob
import json
import os
import re
import sys

CLASS = {"attn_norm": "norm", "attn_sub_norm": "norm", "ffn_norm": "norm", "ffn_sub_norm": "norm",
         "result_norm": "norm", "kqv_out": "attn", "ffn_sub_out": "act", "ffn_inp": "residual",
         "l_out": "residual", "result_output": "logits"}


def tap_class(name):
    return CLASS.get(name.rsplit("-", 1)[0] if "-" in name else name, "proj")


def main(d):
    chained = collections.defaultdict(lambda: collections.defaultdict(float))
    replay = collections.defaultdict(lambda: collections.defaultdict(float))
    replay_med = collections.defaultdict(lambda: collections.defaultdict(list))
    kl = collections.defaultdict(float)
    flips = collections.Counter()
    for f in sorted(glob.glob(os.path.join(d, "*.json"))):
        # FIXTURE.PROFILE[.N].json; fixture names may contain dots (bitnet-b1.58-i2_s).
        m = re.match(r"^(.*)\.(ggml|f32|bitnet-cpp)(\.\d+)?\.json$", os.path.basename(f))
        if not m:
            continue
        fixture, profile = m.group(1), m.group(2)
        # I2_S (bitnet-b1.58, ggml-graph oracle) floors are reported apart from the others.
        if "i2_s" in fixture:
            profile += " [i2_s]"
        r = json.load(open(f))
        for t in r["taps"]:
            for p in t["positions"]:
                chained[profile][t["class"]] = max(chained[profile][t["class"]], p["nmse"])
            for p in t.get("replay") or []:
                replay[profile][t["class"]] = max(replay[profile][t["class"]], p["nmse"])
                replay_med[profile][t["class"]].append(p["nmse"])
        for p in r["positions"] + r["decode"]["steps"]:
            kl[profile] = max(kl[profile], p["logits"]["kl"])
            flips[profile] += not p["logits"]["top1_agree"]
        for s in r["decode"]["steps"]:
            for name, m in s["taps"].items():
                c = tap_class(name)
                chained[profile][c] = max(chained[profile][c], m["nmse"])
    for profile in sorted(chained):
        print(f"profile {profile}: max KL {kl[profile]:.3g}, top-1 flips {flips[profile]}")
        for c in sorted(chained[profile]):
            med = sorted(replay_med[profile][c])
            print(f"  {c:9s} chained max NMSE {chained[profile][c]:.3g}   "
                  f"replay max NMSE {replay[profile][c]:.3g}   "
                  f"replay median {med[len(med) // 2] if med else float('nan'):.3g}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/floors")
