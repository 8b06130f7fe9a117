#!/usr/bin/env python3
"""A CodeSearchNet-style search benchmark built from the CPython standard library.

Every top-level *.py of the standard library is copied with its docstrings removed
(module, class and function docstrings; the code is rewritten by ast.unparse), and each
function or method whose docstring's first sentence has at least four words becomes a
query: that sentence, whose one relevant target is the function's line span in the
rewritten file. Sentences that more than one function shares are left out (they name no
one function). A deterministic sample of --queries of them is written.

The output folder has the layout benches/quality.sh reads (semble's): OUT/queries.json
and OUT/repos/stdlib, so

    python3 benches/csn_stdlib.py --out /tmp/csn
    TRAWL_BIN=target/release/trawl benches/quality.sh /tmp/csn

scores trawl on it (NDCG@10 with semble's rule: a hit counts when it is in the target's
file and overlaps its lines).
"""

import argparse
import ast
import json
import os
import random
import re
import sys
import sysconfig


def first_sentence(doc):
    text = " ".join(doc.strip().split("\n\n")[0].split())
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = (m.group(1) if m else text).strip()
    return sentence[:200]


class StripDocstrings(ast.NodeTransformer):
    def _strip(self, node):
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:] or [ast.Pass()]
        node.body = body
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Module = _strip


def functions(tree):
    """(qualified name, node) of every function and method, in source order."""
    out = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                out.append((name, child))
                walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")

    walk(tree, "")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"],
                    help="the standard library folder (default: this Python's)")
    ap.add_argument("--out", required=True, help="the folder to write (created)")
    ap.add_argument("--queries", type=int, default=400, help="how many queries (default 400)")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    repo = os.path.join(os.path.abspath(args.out), "repos", "stdlib")
    os.makedirs(repo, exist_ok=True)
    candidates = []
    files = lines = 0
    for name in sorted(os.listdir(args.stdlib)):
        path = os.path.join(args.stdlib, name)
        if not name.endswith(".py") or not os.path.isfile(path):
            continue
        try:
            source = open(path, encoding="utf-8").read()
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docs = {qual: ast.get_docstring(node) for qual, node in functions(tree)}
        stripped = ast.unparse(StripDocstrings().visit(tree))
        with open(os.path.join(repo, name), "w", encoding="utf-8") as f:
            f.write(stripped + "\n")
        files += 1
        lines += stripped.count("\n") + 1
        # Line spans in the rewritten file, found by qualified name.
        for qual, node in functions(ast.parse(stripped)):
            doc = docs.get(qual)
            if not doc:
                continue
            sentence = first_sentence(doc)
            if len(sentence.split()) < 4:
                continue
            candidates.append({"path": name, "name": qual, "query": sentence,
                               "start_line": node.lineno, "end_line": node.end_lineno})
    counts = {}
    for c in candidates:
        counts[c["query"].lower()] = counts.get(c["query"].lower(), 0) + 1
    unique = [c for c in candidates if counts[c["query"].lower()] == 1]
    rng = random.Random(args.seed)
    chosen = sorted(rng.sample(unique, min(args.queries, len(unique))),
                    key=lambda c: (c["path"], c["start_line"]))
    queries = []
    for i, c in enumerate(chosen):
        queries.append({
            "id": f"stdlib/{i:03d}", "repo": "stdlib", "repo_dir": repo, "language": "python",
            "category": "docstring", "query": c["query"],
            "targets": [{"path": c["path"], "start_line": c["start_line"],
                         "end_line": c["end_line"], "kind": "relevant", "grade": 1,
                         "exists": True}],
            "n_relevant": 1,
        })
    doc = {
        "benchmark": f"CodeSearchNet-style: CPython {sys.version.split()[0]} stdlib top-level "
                     "modules without docstrings; query = a docstring's first sentence",
        "metric": "NDCG@10 with semble's rule (file + overlapping lines)",
        "repos": [{"name": "stdlib", "language": "python", "dir": repo, "files": files,
                   "lines": lines, "queries": len(queries), "missing_targets": []}],
        "queries": queries,
    }
    with open(os.path.join(os.path.abspath(args.out), "queries.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(f"csn_stdlib.py: {files} files, {lines} lines, {len(unique)} usable docstrings, "
          f"{len(queries)} queries in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
