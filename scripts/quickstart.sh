#!/usr/bin/env bash
# Install infermodes, train the Abalone example, and serve it on http://127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
.venv/bin/python examples/abalone/train.py --output examples/abalone/model
PORT="${PORT:-8080}"
cat <<MSG

The Abalone model is being served on http://127.0.0.1:${PORT} (Ctrl-C stops it). Try:

  curl -s http://127.0.0.1:${PORT}/ping -o /dev/null -w '%{http_code}\n'
  curl -s -H 'Content-Type: text/csv' --data-binary @examples/abalone/model/test.csv \\
       http://127.0.0.1:${PORT}/invocations | head -3
  curl -s -H 'Content-Type: application/json' -H 'Accept: application/json' \\
       -d '{"instances": [[1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15]]}' \\
       http://127.0.0.1:${PORT}/invocations
  curl -s http://127.0.0.1:${PORT}/metrics | grep infermodes_

MSG
exec .venv/bin/infermodes serve --model examples/abalone/model/model.tar.gz --port "$PORT"
