"""A model server worker that dies is replaced without a window of 503s: the other workers
answer while the new one loads the model, and it takes connections only once it has."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import AbaloneModel
from tests.support.processes import running_server, wait_until

ROW = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"


def test_a_killed_worker_is_replaced_while_the_others_answer_every_request(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "2"]
    with running_server(args, tmp_path / "serve.log") as server:
        parent = psutil.Process(server.proc.pid)
        wait_until(lambda: len(parent.children()) == 2, 10, "two workers")
        victim = parent.children()[0]
        os.kill(victim.pid, signal.SIGKILL)
        statuses: dict[int, int] = {}
        replaced = False
        deadline = time.monotonic() + 20
        # a new connection per request: the kernel hands each to a worker that accepts
        while time.monotonic() < deadline and sum(statuses.values()) < 20_000:
            answer = httpx.post(f"{server.url}/invocations", content=ROW,
                                headers={"content-type": "text/csv"}, timeout=10)  # fmt: skip
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            workers = [c for c in parent.children() if c.pid != victim.pid]
            if not replaced and len(workers) == 2:
                replaced = True
                deadline = min(deadline, time.monotonic() + 3)  # and on through its load
        assert replaced, "the killed worker was not replaced"
        assert set(statuses) == {200}, statuses
        assert "exited with -9; restarting" in server.log


def test_a_stop_during_a_crashed_worker_s_back_off_ends_the_server(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """SIGTERM while the supervisor waits out a crashed worker's back-off (1 s) before forking
    its replacement: the replacement, forked after the stop was handled, was told nothing and
    served on, and the supervisor waited for it for ever (a pod held to its grace period, then
    killed). Now no worker is forked once stopping, and the server ends."""
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "2"]
    with running_server(args, tmp_path / "serve.log") as server:
        parent = psutil.Process(server.proc.pid)
        wait_until(lambda: len(parent.children()) == 2, 10, "two workers")
        os.kill(parent.children()[0].pid, signal.SIGKILL)
        wait_until(lambda: "exited with -9; restarting" in log_text(server.log_path), 10,
                   "the supervisor to see the crash")  # fmt: skip
        os.kill(parent.pid, signal.SIGTERM)  # within the back-off: the log line precedes it
        wait_until(lambda: server.proc.poll() is not None, 30, "the server to stop")
        assert server.proc.returncode == 0


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
