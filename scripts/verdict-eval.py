#!/usr/bin/env python3
"""Summarise scripts/verdict-eval.sh runs: per model and oracle, the clean comparisons' exit
codes and largest metric/limit ratio, and for each injected fault its exit code, its first
divergence (is it where the fault sits?) and its ratio to the limit it crossed."""
import glob
import json
import os
import sys
from collections import defaultdict


def receipts(out, name):
    one = os.path.join(out, "receipts", name + ".json")
    if os.path.exists(one):
        return [one]
    return sorted(glob.glob(os.path.join(out, "receipts", glob.escape(name) + ".*.json")))


def main(out):
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(out, "runs.tsv"))]
    table = defaultdict(lambda: {"clean": [], "faults": []})
    problems = []
    for name, model, oracle, kind, expect, code in rows:
        key = name.rsplit(".", 1)[0]  # model.oracle
        rs = [json.load(open(p)) for p in receipts(out, name)]
        if kind == "clean":
            worst = max((r["summary"]["worst"]["ratio"] for r in rs if r["summary"]["worst"]), default=float("nan"))
            bases = sorted({r["summary"]["basis"].split(" (")[0] for r in rs})
            table[key]["clean"].append((code, worst, len(rs), bases))
            if code != expect:
                problems.append(f"{name}: clean run exited {code}")
        else:
            want = kind.split(":", 1)[1]
            want_tap, _, want_step = want.partition("@step")
            fd = rs[0]["first_divergence"] if rs else None
            got = None
            ratio = float("nan")
            ok = False
            if fd:
                got = fd["tap"] + (f"@step{fd['step']}" if fd["step"] is not None else "")
                c = fd["crossing"]
                ratio = c["value"] / c["limit"] if c["limit"] else float("inf")
                ok = fd["tap"] == want_tap and (want_step == "" or fd["step"] == int(want_step))
            table[key]["faults"].append((want, code, got, ok, ratio))
            if code != expect or not ok:
                problems.append(f"{name}: fault {want}: exit {code}, first divergence {got}")
    print(f"{'model.oracle':<28} {'clean':<12} {'worst clean ratio':>18}  {'faults caught/localized':>24}  {'min fault ratio':>16}  basis")
    for key in sorted(table):
        t = table[key]
        clean_codes = ",".join(sorted({c for c, *_ in t["clean"]}))
        worst = max((w for _, w, *_ in t["clean"]), default=float("nan"))
        n = sum(n for *_, n, _ in t["clean"])
        bases = sorted({b for *_, bs in t["clean"] for b in bs})
        f = t["faults"]
        caught = sum(1 for _, code, *_ in f if code == "1")
        loc = sum(1 for *_, ok, _ in f if ok)
        minr = min((r for *_, r in f), default=float("nan"))
        print(f"{key:<28} exit {clean_codes:<7} {worst:>12.3g} ({n:>2})  {caught:>10}/{len(f)} {loc:>3}/{len(f)}        {minr:>16.3g}  {'; '.join(bases)}")
    print()
    if problems:
        print("problems:")
        for p in problems:
            print("  " + p)
    else:
        print("no problems: every clean comparison exits 0, every fault exits 1 at its own tap")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
