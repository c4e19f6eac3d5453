#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run the whole suite:
# lint, unit, integration (real processes, real RabbitMQ) and cluster tests (a real
# Kubernetes control plane built from source). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Go may be installed without being on a non-interactive PATH
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
step() { echo "==> $1"; STEP_STARTED=$SECONDS; }
done_step() { echo "    done in $((SECONDS - STEP_STARTED)) s"; }

step "python environment"
scripts/install.sh --dev
done_step

step "lint (ruff)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
done_step

step "RabbitMQ (Debian's rabbitmq-server; the tests start their own broker on loopback)"
.venv/bin/python -c "from tests.support.rabbitmq import ensure_installed; ensure_installed()"
done_step

step "Kubernetes test control plane: binaries built from source or reused from the cache"
tests/cluster/setup.sh
done_step

step "tests"
exec .venv/bin/python -m pytest "$@"
