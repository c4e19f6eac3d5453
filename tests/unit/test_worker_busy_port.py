"""``infermodes worker`` whose metrics and readiness port another process holds ends with exit
code 1 and a line naming the address and the reason, not a traceback (under ``up`` and on
Kubernetes it is restarted; a user who gave the port sees what to change)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from infermodes.settings import WorkerSettings
from infermodes.workers.async_worker import run
from tests.conftest import AbaloneModel


def test_a_worker_on_a_busy_metrics_port_exits_naming_it(
    abalone_model: AbaloneModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        settings = WorkerSettings(
            endpoint="abalone",
            model_uri=str(abalone_model.tarball),
            broker_url=f"sqlite:///{tmp_path / 'queue.db'}",
            metrics_port=port,
        )
        with caplog.at_level(logging.ERROR, logger="infermodes.worker"):
            assert run(settings) == 1
    assert f"cannot serve metrics and readiness on 127.0.0.1:{port}: Address already in use" in (
        caplog.text
    )
