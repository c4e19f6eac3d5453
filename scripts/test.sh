#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run the whole suite:
# lint and types, unit, integration (real processes, real RabbitMQ) and cluster tests (a real
# Kubernetes control plane built from source). Extra arguments go to pytest.
#   scripts/test.sh                  # everything, as CI runs it
#   scripts/test.sh --unit [ARGS]    # lint, types and tests/unit only: seconds, no broker or cluster
set -euo pipefail
cd "$(dirname "$0")/.."
# Go may be installed without being on a non-interactive PATH
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
step() { echo "==> $1"; STEP_STARTED=$SECONDS; }
done_step() { echo "    done in $((SECONDS - STEP_STARTED)) s"; }

unit_only=false
if [ "${1:-}" = "--unit" ]; then
  unit_only=true
  shift
fi

step "python environment"
scripts/install.sh --dev
done_step

step "lint (ruff) and types (mypy strict)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
done_step

if $unit_only; then
  step "unit tests"
  exec .venv/bin/python -m pytest tests/unit "$@"
fi

step "RabbitMQ (Debian's rabbitmq-server; the tests start their own broker on loopback)"
.venv/bin/python -c "from tests.support.rabbitmq import ensure_installed; ensure_installed()"
done_step

step "SeaweedFS (a real S3 gateway: built once from its Go module and cached; tests start their own)"
.venv/bin/python -c "from tests.support.seaweedfs import ensure_installed; ensure_installed()"
done_step

step "Kubernetes test control plane: binaries built from source or reused from the cache"
tests/cluster/setup.sh
done_step

step "tests"
# the slowest tests named at the end: where CI's time goes, as the suite grows
exec .venv/bin/python -m pytest --durations=30 "$@"
