#!/usr/bin/env bash
# Install infermodes, train the Abalone example, start `infermodes up` on http://127.0.0.1:8080
# with the four example endpoints (the same files `kubectl apply` takes), call each mode once and
# print what it got, then keep serving (Ctrl-C stops every process). QUICKSTART_ONCE=1 stops
# after the calls instead (for tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
.venv/bin/python examples/abalone/train.py --output examples/abalone/model
PORT="${PORT:-8080}"
STATE=.infermodes
export INFERMODES_UP_URL="http://127.0.0.1:${PORT}"
IM=.venv/bin/infermodes

mkdir -p "$STATE/manifests"
for mode in realtime serverless async batch; do
  sed -e "s#/var/lib/infermodes/models/abalone#$PWD/examples/abalone/model#" \
      -e "s#/var/lib/infermodes/async/abalone#$PWD/$STATE/async#" \
      "examples/abalone/$mode.yaml" > "$STATE/manifests/$mode.yaml"
done
rm -rf examples/abalone/model/batch/output
# a state dir of an earlier run keeps its batch job, Completed: an unchanged manifest is not run
# again, and its outputs were just removed
RERUN_BATCH=""
[ -f "$STATE/endpoints/abalone-batch.json" ] && RERUN_BATCH=1
"$IM" up --port "$PORT" --state-dir "$STATE" -f "$STATE/manifests" &
UP=$!
trap 'kill -TERM "$UP" 2>/dev/null; wait "$UP"' EXIT
for _ in $(seq 120); do
  curl -sf "$INFERMODES_UP_URL/readyz" -o /dev/null && break
  kill -0 "$UP" || exit 1
  sleep 0.5
done
for _ in $(seq 120); do
  "$IM" get abalone | grep -q InService && break
  sleep 0.5
done
if [ -n "$RERUN_BATCH" ]; then  # see above: run the transform anew
  "$IM" delete abalone-batch > /dev/null
  "$IM" apply -f "$STATE/manifests/batch.yaml" > /dev/null
fi
ROW=1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15
echo; "$IM" get
echo; echo "realtime:   $("$IM" invoke abalone --data $ROW)"
echo "serverless: $("$IM" invoke abalone-serverless --data $ROW)  (cold-started from zero)"
ACCEPTED=$("$IM" invoke abalone-async --async --data $ROW)
OUTPUT=$(echo "$ACCEPTED" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["OutputLocation"].removeprefix("file://"))')
echo "async:      accepted, output at $OUTPUT"
for _ in $(seq 120); do [ -f "$OUTPUT" ] && break; sleep 0.5; done
echo "            output: $(cat "$OUTPUT")"
for _ in $(seq 240); do
  "$IM" get abalone-batch | grep -qE 'Completed|Failed' && break
  sleep 0.5
done
echo "batch:      $("$IM" get abalone-batch | tail -1)"
echo "            outputs: $(cd examples/abalone/model/batch/output && ls -- *.out | tr "\n" " ")"
# the CLI talks to port 8080 unless told otherwise: say how, for another PORT
URL_HINT=""
[ "$PORT" = 8080 ] || URL_HINT="
  export INFERMODES_UP_URL=$INFERMODES_UP_URL   # the CLI's default is port 8080"
cat <<MSG

infermodes up serves the four endpoints on $INFERMODES_UP_URL (Ctrl-C stops every process). Try:
$URL_HINT
  .venv/bin/infermodes get
  .venv/bin/infermodes invoke abalone --data $ROW
  curl -s -H 'Content-Type: text/csv' --data-binary @examples/abalone/model/test.csv \\
       $INFERMODES_UP_URL/endpoints/abalone/invocations | head -3
  .venv/bin/infermodes describe abalone-serverless
  .venv/bin/infermodes logs abalone

MSG
[ "${QUICKSTART_ONCE:-}" = 1 ] || wait "$UP"
