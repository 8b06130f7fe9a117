#!/usr/bin/env python3
"""Side-by-side NDCG@10 tables from benches/quality.sh outputs.

Usage: benches/quality_table.py LABEL=FILE.jsonl [LABEL=FILE.jsonl ...]

Prints, per mode, the overall, per-language and per-repository figures of each run in a
column of its own, with semble's published figures (semble_v2, CodeRankEmbed hybrid) for
the same repositories beside them.
"""
import json
import sys


def load(path):
    rows = {}
    published = {}
    for line in open(path):
        d = json.loads(line)
        if "mode" not in d:
            continue
        scope = d["scope"]
        key = {"overall": "ALL", "language": d.get("language"), "repo": d.get("repo")}.get(scope)
        if key is None:
            continue
        rows[(d["mode"], scope, key)] = d["ndcg10"]
        pub = d.get("published") or d.get("published_same_repos") or {}
        published[(scope, key)] = pub
    return rows, published


def main():
    runs = []
    for arg in sys.argv[1:]:
        label, _, path = arg.partition("=")
        if not path:
            sys.exit(__doc__)
        runs.append((label, *load(path)))
    if not runs:
        sys.exit(__doc__)
    modes = sorted({k[0] for _, rows, _ in runs for k in rows}, key=["keyword", "semantic", "hybrid"].index)
    keys = []
    for _, rows, _ in runs:
        for k in rows:
            if (k[1], k[2]) not in keys:
                keys.append((k[1], k[2]))
    order = {"overall": 0, "language": 1, "repo": 2}
    keys.sort(key=lambda k: (order[k[0]], k[1]))
    published = runs[0][2]
    for mode in modes:
        print(f"\n{mode}")
        print("| scope | " + " | ".join(l for l, _, _ in runs) + " | semble_v2 | CRE hybrid |")
        print("|---|" + "---|" * (len(runs) + 2))
        for scope, key in keys:
            vals = [rows.get((mode, scope, key)) for _, rows, _ in runs]
            pub = published.get((scope, key), {})
            cell = lambda v: "" if v is None else f"{v:.3f}"
            print(f"| {key} | " + " | ".join(cell(v) for v in vals)
                  + f" | {cell(pub.get('semble_v2'))} | {cell(pub.get('coderankembed_hybrid'))} |")


if __name__ == "__main__":
    main()
