#!/usr/bin/env python3
"""PyTorch / sentence-transformers baseline for trawl's embedding throughput.

Collects the first N function/class definitions (source text via
ast.get_source_segment) from a Python corpus, files in sorted path order and
definitions in source order within a file, embeds them with
sentence-transformers (all-MiniLM-L6-v2, max_seq_length 256, batch_size 32,
CPU) and prints one JSON line with the throughput.

    python benches/st_baseline.py --model /var/lib/trawl/models/all-MiniLM-L6-v2 \
        --n 512 --dump /tmp/st_texts.jsonl

--dump writes the texts as JSON lines ({"path":..,"name":..,"text":..}) so the
Rust side can embed exactly the same inputs.  Needs: torch,
sentence-transformers (e.g. a venv; see tests/fixtures/minilm_reference.json
for the versions used to make the reference vectors).
"""
import argparse, ast, glob, json, os, sys, sysconfig, time


def default_corpus():
    cands = sorted(glob.glob("/usr/lib/python3.[0-9]*"))
    cands = [c for c in cands if os.path.exists(os.path.join(c, "os.py"))]
    return cands[-1] if cands else sysconfig.get_paths()["stdlib"]


def collect(corpus, n):
    files = []
    for root, dirs, names in os.walk(corpus):
        dirs[:] = [d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__")]
        files += [os.path.join(root, f) for f in names if f.endswith(".py")]
    out = []
    for path in sorted(files):
        try:
            with open(path, encoding="utf-8") as f:
                src = f.read()
            tree = ast.parse(src, filename=path)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        nodes = [x for x in ast.walk(tree)
                 if isinstance(x, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        nodes.sort(key=lambda x: (x.lineno, x.col_offset))
        for node in nodes:
            seg = ast.get_source_segment(src, node)
            if not seg or not seg.strip():
                continue
            out.append({"path": os.path.relpath(path, corpus), "name": node.name, "text": seg})
            if len(out) >= n:
                return out
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--model", default="/var/lib/trawl/models/all-MiniLM-L6-v2")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--dump", help="write the texts used as JSON lines to this file")
    ap.add_argument("--texts", help="embed the texts of these JSON lines ({\"text\": ..}) instead "
                    "of collecting them (trawl bench index --python writes such a file)")
    a = ap.parse_args()

    if a.texts:
        with open(a.texts, encoding="utf-8") as f:
            snippets = [json.loads(line) for line in f if line.strip()]
    else:
        snippets = collect(a.corpus, a.n)
    texts = [s["text"] for s in snippets]
    if a.dump:
        with open(a.dump, "w", encoding="utf-8") as f:
            for s in snippets:
                f.write(json.dumps(s, ensure_ascii=False) + "\n")

    import torch
    from sentence_transformers import SentenceTransformer
    if a.threads:
        torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.model, device="cpu")
    model.max_seq_length = 256
    tok = model.tokenizer
    lens = [len(ids) for ids in tok(texts, truncation=True, max_length=256)["input_ids"]]
    full = [len(ids) for ids in tok(texts, truncation=False)["input_ids"]]

    model.encode(texts[:8], batch_size=8)  # warm-up
    t0 = time.perf_counter()
    vecs = model.encode(texts, batch_size=a.batch_size, convert_to_numpy=True)
    dt = time.perf_counter() - t0
    assert vecs.shape == (len(texts), 384)
    print(json.dumps({
        "snippets": len(texts),
        "mean_tokens": round(sum(lens) / len(lens), 1),
        "mean_tokens_untruncated": round(sum(full) / len(full), 1),
        "truncated": sum(1 for x in full if x > 256),
        "seconds": round(dt, 3),
        "snippets_per_sec": round(len(texts) / dt, 1),
        "torch_threads": torch.get_num_threads(),
        "batch_size": a.batch_size,
        "corpus": a.corpus,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
