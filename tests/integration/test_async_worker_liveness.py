"""An async worker's liveness (``GET /healthz`` on its metrics port, the pod's liveness probe):
it holds while an invocation runs far longer than the stall bound, since invocations run on the
consumer's pool and its loop turns on; it fails, naming why, once the consumer's loop stops
turning (stopped here by a fault hook, as a deadlock would), and holds again once it turns."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from tests.conftest import AbaloneModel
from tests.support.async_plane import plane, spawn_worker, wait_consuming
from tests.support.batch import FAULTS
from tests.support.processes import wait_until
from tests.support.rabbitmq import Broker

ROW = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"
STALL_SECONDS = 1.5  # the loop turns every 0.2 s: room for a busy machine


def test_a_busy_worker_is_alive_and_one_whose_consumer_loop_is_stuck_is_not(
    abalone_model: AbaloneModel, rabbitmq: Broker, tmp_path: Path
) -> None:
    hold, stuck = tmp_path / "hold", tmp_path / "stuck"
    faults = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])),
        "INFERMODES_TEST_HELD_PREDICT": str(hold),
        "INFERMODES_TEST_STUCK_CONSUMER": str(stuck),
        "INFERMODES_WORKER_LIVENESS_STALL_SECONDS": str(STALL_SECONDS),
    }
    endpoint = "liveness"
    with plane(rabbitmq, endpoint, f"file://{tmp_path}/store", tmp_path) as running:
        worker = spawn_worker(rabbitmq, endpoint, f"file://{abalone_model.tarball}",
                              tmp_path / "worker.log", env=faults)  # fmt: skip
        running.workers.append(worker)  # stopped by the plane
        wait_consuming(worker)

        def liveness() -> httpx.Response:
            return httpx.get(f"{worker.url}/healthz", timeout=10)

        assert liveness().text == "alive\n"
        hold.touch()
        assert running.invoke(ROW).status_code == 202
        wait_until(Path(f"{hold}.started").exists, 30, "the invocation to start")
        # the invocation holds a pool thread through several stall bounds: alive throughout
        until = time.monotonic() + 4 * STALL_SECONDS
        while time.monotonic() < until:
            answer = liveness()
            assert answer.status_code == 200, answer.text
        stuck.touch()
        wait_until(lambda: liveness().status_code == 503, 30, "liveness to fail")
        assert liveness().text.startswith("the consumer loop has not turned for ")
        stuck.unlink()
        hold.unlink()
        wait_until(lambda: liveness().status_code == 200, 30, "liveness to hold again")
