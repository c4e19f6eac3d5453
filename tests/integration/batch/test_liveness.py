"""A batch instance's liveness (``GET /healthz`` on its metrics port, the Job's pods' liveness
probe): it holds while a mini-batch runs long within what its attempts may take, and fails,
naming why, once one has been in flight past that (a hung predict, held here by a fault hook):
an attempt is judged only when it ends, so one that never ends would hold the Job for ever."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from infermodes.errors import EXIT_OBJECTS_FAILED
from tests.conftest import AbaloneModel
from tests.support.batch import FAULTS, batch_command, csv_text, finish, sample_rows, start
from tests.support.processes import free_port, stop_process, wait_until


def held_instance(
    model: AbaloneModel, folder: Path, hold: Path, stall_seconds: float
) -> tuple[subprocess.Popen[bytes], str]:
    """An instance over one small CSV object whose predictions wait while ``hold`` exists; its
    mini-batch may take its one attempt's 1 s plus ``stall_seconds`` before it counts as stuck."""
    (folder / "in").mkdir(parents=True)
    (folder / "in/a.csv").write_bytes(csv_text(sample_rows(model.test_rows, 50, seed=3)))
    port = free_port()
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])),
        "INFERMODES_TEST_HELD_PREDICT": str(hold),
        "INFERMODES_BATCH_LIVENESS_STALL_SECONDS": str(stall_seconds),
    }
    command = batch_command(model.tarball, str(folder / "in"), str(folder / "out"),
                            "--metrics-port", str(port), "--invocations-timeout-in-seconds", "1",
                            "--invocations-max-retries", "0")  # fmt: skip
    return start(command, env), f"http://127.0.0.1:{port}/healthz"


def test_a_long_mini_batch_is_alive_and_one_past_its_attempts_is_not(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    proc, healthz = held_instance(abalone_model, tmp_path / "long", hold, stall_seconds=3600)
    try:
        wait_until(Path(f"{hold}.started").exists, 60, "the prediction to start")
        until = time.monotonic() + 3  # past the attempt's timeout: judged when it ends
        while time.monotonic() < until:
            answer = httpx.get(healthz, timeout=10)
            assert (answer.status_code, answer.text) == (200, "alive\n")
            time.sleep(0.2)  # a probe's pace, not a busy loop on the CI's two cores
        hold.unlink()
        done = finish(proc)  # over its 1 s timeout: the object fails, the instance is not stuck
        assert done.returncode == EXIT_OBJECTS_FAILED, done.log
        assert "over the invocation timeout of 1 s" in done.log
    finally:
        if proc.poll() is None:
            stop_process(proc)

    hold.touch()
    Path(f"{hold}.started").unlink()
    proc, healthz = held_instance(abalone_model, tmp_path / "hung", hold, stall_seconds=1)
    try:
        wait_until(Path(f"{hold}.started").exists, 60, "the prediction to start")
        wait_until(lambda: httpx.get(healthz, timeout=10).status_code == 503, 60,
                   "liveness to fail")  # fmt: skip
        said = httpx.get(healthz, timeout=10).text
        assert said.startswith("a mini-batch has been in flight for "), said
        assert said.endswith(" s, past the 2 s allowed\n"), said
    finally:
        hold.unlink()
        stop_process(proc)
