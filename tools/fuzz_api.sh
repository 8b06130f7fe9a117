#!/usr/bin/env bash
# A schema-driven fuzz of trawl's HTTP API with schemathesis: every operation of the
# OpenAPI document, every check (no 5xx, documented status codes and content types,
# responses that match their schemas, schema-invalid requests refused, valid ones
# accepted; see tools/schemathesis.toml for the exceptions), against a real server.
#
# Usage: tools/fuzz_api.sh [SECONDS]     (default 300; schemathesis' --max-time)
#
# It installs schemathesis (pinned) into a virtualenv under ~/.cache/trawl, indexes a copy
# of this repository's src/domain and src/search (real Rust code) so that searches, runs
# and tasks have data, then runs `trawl serve` on 127.0.0.1:$PORT with a token, one worker
# and the copy as the only allowed root, and fuzzes it. The report (schemathesis' own) goes
# to stdout; the exit status is schemathesis'.
#
# Environment:
#   TRAWL_BIN    the trawl binary (default: `trawl` on PATH)
#   TRAWL_HOME   trawl's home to use as is. Unset: a fresh home under a temporary folder,
#                set up with `trawl setup`, its cluster stopped and the folder removed at
#                exit. TRAWL_PG_BIN, TRAWL_MODEL_DIR, TRAWL_ONNXRUNTIME make setup skip
#                the parts they replace.
#   PORT         the port to serve on (default 7791)
#   WORKERS      schemathesis workers (default 2)
#   FUZZ_PYTHON  the Python to install schemathesis with (default: the newest python3.x
#                that runs)
set -euo pipefail

case "${1:-}" in -h|--help) sed -n '2,24p' "$0" >&2; exit 2 ;; esac
SECONDS_BUDGET="${1:-300}"
[[ "$SECONDS_BUDGET" =~ ^[0-9]+$ ]] || { echo "fuzz_api.sh: SECONDS must be a whole number, not '$SECONDS_BUDGET'" >&2; exit 2; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PORT="${PORT:-7791}"
TRAWL_BIN="${TRAWL_BIN:-trawl}"
command -v "$TRAWL_BIN" >/dev/null 2>&1 \
  || { echo "fuzz_api.sh: no trawl binary '$TRAWL_BIN': set TRAWL_BIN or put trawl on PATH" >&2; exit 2; }
TRAWL_BIN="$(realpath -- "$(command -v "$TRAWL_BIN")")"

# The newest Python 3 that runs (CPython 3.11's parser trips over schemathesis' coverage
# phase with "AST constructor recursion depth mismatch"; 3.12 and later do not).
PYTHON="${FUZZ_PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.13 python3.12 python3; do
    if "$candidate" -c 'import venv' >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
[ -n "$PYTHON" ] || { echo "fuzz_api.sh: no Python 3 with venv found: set FUZZ_PYTHON" >&2; exit 2; }
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/trawl/schemathesis-venv-$PYVER"
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q '4.32.5'; then
  echo "fuzz_api.sh: installing schemathesis 4.32.5 for Python $PYVER into $VENV" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet 'schemathesis==4.32.5'
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/trawl-fuzz.XXXXXX")"
# As root the embedded PostgreSQL runs as the user `trawl`, who must reach the home.
chmod 755 "$WORK"
OWN_HOME=0
if [ -z "${TRAWL_HOME:-}" ]; then
  OWN_HOME=1
  export TRAWL_HOME="$WORK/home"
  mkdir -p "$TRAWL_HOME" && chmod 755 "$TRAWL_HOME"
fi
SERVER=""
cleanup() {
  local rc=$?
  [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true
  [ -z "$SERVER" ] || wait "$SERVER" 2>/dev/null || true
  [ "$OWN_HOME" = 0 ] || "$TRAWL_BIN" db stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$TRAWL_BIN" setup >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log" >&2; echo "fuzz_api.sh: trawl setup failed" >&2; exit 1; }
SRC="$WORK/src"
mkdir -p "$SRC"
cp -r "$ROOT/src/domain" "$ROOT/src/search" "$SRC/"
"$TRAWL_BIN" index "$SRC" --wait >"$WORK/index.log" 2>&1 || { cat "$WORK/index.log" >&2; echo "fuzz_api.sh: indexing the sample failed" >&2; exit 1; }

TOKEN="fuzz-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
TRAWL_API_TOKEN="$TOKEN" TRAWL_ALLOWED_ROOTS="$SRC" \
  "$TRAWL_BIN" serve --bind "127.0.0.1:$PORT" --workers 1 >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 60); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log" >&2; echo "fuzz_api.sh: trawl serve exited" >&2; exit 1; }
  sleep 1
done

echo "fuzz_api.sh: fuzzing http://127.0.0.1:$PORT for ${SECONDS_BUDGET}s" >&2
status=0
# From the scratch folder: schemathesis keeps a cache (.schemathesis/) in its working folder.
cd "$WORK"
"$VENV/bin/st" --config-file "$HERE/schemathesis.toml" run \
  "http://127.0.0.1:$PORT/api/v1/openapi.json" \
  -H "Authorization: Bearer $TOKEN" \
  --max-time "$SECONDS_BUDGET" -w "${WORKERS:-2}" --request-timeout 30 \
  --no-color || status=$?
# A panic, or an answer the server counted as its own failure (a 5xx), fails the run even
# where schemathesis did not see it (a stream cut short, say).
if grep -q 'panicked\|API request failed' "$WORK/serve.log"; then
  echo "fuzz_api.sh: the server logged failures:" >&2
  grep 'panicked\|API request failed' "$WORK/serve.log" | head -20 >&2
  status=1
fi
exit "$status"
