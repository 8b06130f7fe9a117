#!/usr/bin/env python3
"""How well a run's overall percent tracks its time, for a trawl binary.

Usage: benches/progress_accuracy.py [--files N] [--same | --different] [--verbose]

Copies N modules (default 300) of this machine's CPython standard library into two
temporary folders, indexes the first (so recent runs say what the stages cost), then
indexes the second with `--wait --json`, stamping each progress snapshot as it arrives,
and compares its overall_percent with the share of the run's real time (from a worker
taking it up to its end, as the database recorded them) gone by then (the seed's rule:
within 5 points). --same (default) copies the same modules twice, as a
run like the recent ones; --different takes the next N modules. Both repositories are
removed afterwards. Run it on a quiet machine: another load changes the run's pace under
it. Uses the configured trawl (TRAWL_HOME, TRAWL_DATABASE_URL, ...); TRAWL_BIN names the
binary (default: trawl on PATH). Prints one JSON line.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import datetime

SKIP = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def modules(lib):
    out = []
    for root, dirs, files in os.walk(lib):
        dirs[:] = [d for d in dirs if d not in SKIP]
        out += [os.path.join(root, f) for f in files if f.endswith(".py")]
    return sorted(out)


def copy(lib, files, to):
    for f in files:
        dest = os.path.join(to, os.path.relpath(f, lib))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(f, dest)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--verbose", action="store_true", help="print each snapshot against the time on stderr")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--same", action="store_true", default=True)
    g.add_argument("--different", action="store_true")
    args = ap.parse_args()
    trawl = os.environ.get("TRAWL_BIN") or shutil.which("trawl")
    if not trawl:
        sys.exit("progress_accuracy.py: no trawl binary: set TRAWL_BIN or put trawl on PATH")
    lib = sysconfig.get_paths()["stdlib"]
    mods = modules(lib)
    n = args.files
    need = 2 * n if args.different else n
    if len(mods) < need:
        sys.exit(f"progress_accuracy.py: {len(mods)} modules in {lib}, fewer than {need}")
    tmp = tempfile.mkdtemp(prefix="trawl-progress-")
    a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
    copy(lib, mods[:n], a)
    copy(lib, mods[n : 2 * n] if args.different else mods[:n], b)
    try:
        subprocess.run([trawl, "index", a, "--wait"], check=True, stdout=subprocess.DEVNULL)
        p = subprocess.Popen([trawl, "index", b, "--wait", "--json"], stdout=subprocess.PIPE, text=True)
        stamped = []
        for line in p.stdout:
            try:
                s = json.loads(line)
            except ValueError:
                continue
            if "overall_percent" in s:
                stamped.append((time.time(), s))
        if p.wait() != 0 or not stamped:
            sys.exit("progress_accuracy.py: the measured run failed")
        shown = subprocess.run([trawl, "runs", "show", str(stamped[-1][1]["run_id"]), "--json"],
                               check=True, capture_output=True, text=True).stdout
        run = json.loads(shown)
        run = run.get("run", run)
        start, end = (datetime.fromisoformat(run[k]).timestamp() for k in ("started_at", "finished_at"))
        # Each snapshot against the share of the run's real time (from a worker taking it up
        # to its end, as the database recorded them) gone by when it arrived; the ones that
        # arrived before the run began (preparing_index) say 0 and are left out.
        points = [(100 * (t - start) / (end - start), s) for t, s in stamped if t >= start]
        devs = [s["overall_percent"] - min(share, 100.0) for share, s in points]
        worst = max(devs, key=abs)
        if args.verbose:
            for (share, s), d in zip(points, devs):
                print(f"{share:5.1f} % of the time: {s['overall_percent']:5.1f} % "
                      f"({s['stage']} {s['items_done']}/{s['items_total']}, {d:+.1f})", file=sys.stderr)
        print(json.dumps({
            "files": n,
            "content": "different" if args.different else "same",
            "seconds": round(end - start, 2),
            "queued_seconds": round(start - stamped[0][0], 2),
            "snapshots": len(points),
            "worst_points": round(worst, 1),
            "mean_abs_points": round(sum(abs(d) for d in devs) / len(devs), 1),
            "within_5": round(sum(abs(d) <= 5 for d in devs) / len(devs), 3),
        }))
    finally:
        for d in (a, b):
            subprocess.run([trawl, "repos", "remove", d], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
