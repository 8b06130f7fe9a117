#!/usr/bin/env bash
# Scale-out on one machine: two trawl homes stand for two nodes sharing node A's embedded
# PostgreSQL. For each worker count (WORKERS, default "1 2 4"; the workers alternate
# between the two homes, CONCURRENCY slots each) the same repositories are indexed from an
# empty database; node B runs `trawl serve --workers 0`, whose keyword index follows the
# change log. Prints, per worker count, the wall time from the first enqueue to the last
# run's end, and the keyword-index lag on node B: from a change's commit to node B's index
# having applied it (p50, p99, max), by whichever process of node B applied it (the
# server's follower, or a worker of node B catching up after its BM25_INDEX), read by
# polling the number its last commit recorded (meta.json's payload) every 20 ms.
#
#   BIN=target/release/trawl REPOS="/path/a /path/b" bash benches/scale_out.sh
#
# Needs TRAWL_PG_BIN, TRAWL_MODEL_DIR and TRAWL_ONNXRUNTIME pointing at an installed set-up
# (`trawl setup`), and python3.
set -euo pipefail
BIN="${BIN:?set BIN to a trawl binary (a release build)}"
REPOS="${REPOS:?set REPOS to the directories to index, space-separated}"
WORKERS="${WORKERS:-1 2 4}"
CONCURRENCY="${CONCURRENCY:-2}"
SCRATCH="${SCRATCH:-$(mktemp -d /tmp/trawl-scale-out.XXXXXX)}"
PSQL="$TRAWL_PG_BIN/psql"
PORT="${PORT:-18777}"

for n in $WORKERS; do
  a="$SCRATCH/$n/a" b="$SCRATCH/$n/b"
  mkdir -p "$a" "$b"
  TRAWL_HOME="$a" "$BIN" db start >/dev/null
  url=$(TRAWL_HOME="$a" "$BIN" db url)
  sql() { "$PSQL" "$url" -qtAX -c "$1"; }
  TRAWL_HOME="$b" TRAWL_DATABASE_URL="$url" RUST_LOG=trawl::search=debug \
    "$BIN" serve --workers 0 --bind "127.0.0.1:$PORT" >"$SCRATCH/$n/serve.log" 2>&1 &
  pids=($!)
  for i in $(seq 1 "$n"); do
    home=$([ $((i % 2)) -eq 1 ] && echo "$a" || echo "$b")
    TRAWL_HOME="$home" TRAWL_DATABASE_URL="$url" RUST_LOG=trawl=warn \
      "$BIN" worker --concurrency "$CONCURRENCY" >"$SCRATCH/$n/worker$i.log" 2>&1 &
    pids+=($!)
  done
  python3 - "$b/index/keyword/meta.json" >"$SCRATCH/$n/applied.txt" <<'PY' &
import json, sys, time, datetime
last = None
while True:
    try:
        seq = json.loads(json.load(open(sys.argv[1]))["payload"])["applied_seq"]
    except Exception:
        seq = None
    if seq is not None and seq != last:
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        print(f"{now.isoformat()} applied={seq}", flush=True)
        last = seq
    time.sleep(0.02)
PY
  pids+=($!)
  sleep 2
  start=$(date +%s.%N)
  for r in $REPOS; do
    TRAWL_HOME="$a" TRAWL_DATABASE_URL="$url" "$BIN" index "$r" >/dev/null
  done
  until [ "$(sql "SELECT count(*) FROM runs WHERE status IN ('queued', 'running', 'paused')")" = 0 ]; do
    sleep 0.2
  done
  end=$(date +%s.%N)
  failed=$(sql "SELECT count(*) FROM runs WHERE status <> 'succeeded'")
  sleep 3
  sql "SELECT seq, to_char(committed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM keyword_changes ORDER BY seq" >"$SCRATCH/$n/changes.txt"
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  TRAWL_HOME="$a" "$BIN" db stop >/dev/null 2>&1 || true
  python3 - "$n" "$start" "$end" "$failed" "$SCRATCH/$n/changes.txt" "$SCRATCH/$n/applied.txt" <<'PY'
import re, sys, datetime, statistics
n, start, end, failed, changes, log = sys.argv[1:]
committed = {}
for line in open(changes):
    seq, at = line.strip().split("|")
    committed[int(seq)] = datetime.datetime.fromisoformat(at)
applied = []  # (time, applied seq), in log order
ansi = re.compile(r"\x1b\[[0-9;]*m")
for line in open(log):
    line = ansi.sub("", line)
    m = re.search(r"applied=(\d+)", line)
    if not m:
        continue
    at = datetime.datetime.fromisoformat(line.split()[0][:26])
    applied.append((at, int(m.group(1))))
lags = []
for seq, at in committed.items():
    seen = next((t for t, a in applied if a >= seq), None)
    if seen is not None:
        lags.append((seen - at).total_seconds())
lags.sort()
def pct(p):
    return lags[min(len(lags) - 1, int(round(p / 100 * (len(lags) - 1))))] if lags else float("nan")
print(f"workers={n} wall={float(end) - float(start):.1f}s runs_not_succeeded={failed} "
      f"changes={len(committed)} applied_on_b={len(lags)} "
      f"lag_p50={pct(50):.3f}s lag_p99={pct(99):.3f}s lag_max={max(lags) if lags else float('nan'):.3f}s")
PY
done
