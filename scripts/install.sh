#!/usr/bin/env bash
# Create .venv and install infermodes into it (editable), with the test extras when asked:
#   scripts/install.sh            # runtime only
#   scripts/install.sh --dev      # + test tools, kopf, the Kubernetes client, moto
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/python -m pip install --quiet -e ".[test]"
else
  .venv/bin/python -m pip install --quiet -e .
fi
