"""The model server's liveness port (``infermodes.server.liveness``): it answers while a worker's
event loop is deep in a long prediction (a busy server is never restarted), and it names a worker
whose loop is stuck (stopped here with SIGSTOP) until the loop runs again."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import AbaloneModel
from tests.support.batch import FAULTS
from tests.support.processes import ServerProcess, free_port, running_server, wait_until

ROW = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"
STALL_SECONDS = "2"  # the least: twice the loops' tick


def liveness(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)


def held_predictions(hold: Path, liveness_port: int) -> dict[str, str]:
    """A server's environment: its predictions held while ``hold`` exists (``faults/``), its
    liveness on ``liveness_port``."""
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])),
        "INFERMODES_TEST_HELD_PREDICT": str(hold),
        "INFERMODES_SERVE_LIVENESS_PORT": str(liveness_port),
    }


def listens_on(process: psutil.Process, port: int) -> bool:
    """Whether ``process`` listens on ``port`` (a process gone meanwhile does not)."""
    try:
        connections = process.net_connections(kind="tcp")
    except psutil.NoSuchProcess:  # a zombie too
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


def running(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def split_children(
    parent: psutil.Process, liveness_port: int
) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """A supervisor's children: its workers, and the liveness server's process (listening on
    ``liveness_port``)."""
    children = [c for c in parent.children() if running(c)]
    servers = [c for c in children if listens_on(c, liveness_port)]
    return [c for c in children if c not in servers], servers


def post_row(url: str, answers: list[httpx.Response]) -> threading.Thread:
    """ROW posted from a thread of its own (its prediction may be held); its answer appended."""

    def post() -> None:
        headers = {"content-type": "text/csv"}
        answers.append(httpx.post(f"{url}/invocations", content=ROW, headers=headers, timeout=60))

    call = threading.Thread(target=post)
    call.start()
    return call


def test_liveness_answers_while_the_only_worker_is_deep_in_a_long_prediction(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    port, hold = free_port(), tmp_path / "hold"
    env = {**held_predictions(hold, port), "INFERMODES_SERVE_LIVENESS_STALL_SECONDS": STALL_SECONDS}
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "1"]
    with running_server(args, tmp_path / "serve.log", env) as server:
        assert liveness(port).text == "alive\n"
        hold.touch()
        answers: list[httpx.Response] = []
        call = post_row(server.url, answers)
        try:
            wait_until(Path(f"{hold}.started").exists, 30, "the prediction to start")
            # the loop is held: its own port does not answer, for longer than the stall bound
            with pytest.raises(httpx.ReadTimeout):
                httpx.get(f"{server.url}/ping", timeout=float(STALL_SECONDS) * 3)
            answer = liveness(port)
            assert answer.status_code == 200, answer.text
            assert answer.text.startswith("alive\nworker 0: predicting for "), answer.text
        finally:
            hold.unlink()
            call.join(60)
        assert answers[0].status_code == 200
        assert liveness(port).text == "alive\n"


def test_once_a_worker_measured_a_long_prediction_the_next_leaves_its_loop_and_ping_answers(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Readiness that does not flap: ``/ping`` is answered on the worker's event loop, so a
    prediction run there keeps it unanswered (the kubelet's probe gives up after its 1 s
    timeout, three times in a row: ~3 s) and takes a merely busy replica out of service. A
    prediction the worker expects to be long (its rows at the last call's seconds per row,
    past ``INFERMODES_SERVE_LOOP_PREDICT_SECONDS``) runs off the loop instead: after a first
    held one-row prediction (the model measured fast at load: on the loop), the next one-row
    prediction is held on a thread while ``/ping`` answers 200 and liveness names it."""
    port, hold = free_port(), tmp_path / "hold"
    env = held_predictions(hold, port)
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "1"]
    with running_server(args, tmp_path / "serve.log", env) as server:
        answers: list[httpx.Response] = []
        for held in range(2):
            hold.touch()
            call = post_row(server.url, answers)
            try:
                wait_until(Path(f"{hold}.started").exists, 30, "the prediction to start")
                if held == 0:  # nothing measured it long yet: on the loop, which it holds
                    with pytest.raises(httpx.ReadTimeout):
                        httpx.get(f"{server.url}/ping", timeout=3)
                else:  # measured: on a thread, the loop free
                    assert httpx.get(f"{server.url}/ping", timeout=10).status_code == 200
                    assert liveness(port).text.startswith("alive\nworker 0: predicting for ")
            finally:
                hold.unlink()
                Path(f"{hold}.started").unlink(missing_ok=True)
                call.join(60)
        unheld = httpx.post(f"{server.url}/invocations", content=ROW,
                            headers={"content-type": "text/csv"}, timeout=10)  # fmt: skip
        assert [(a.status_code, a.text) for a in answers] == [(200, unheld.text)] * 2


def test_liveness_names_a_worker_whose_loop_is_stuck_until_it_runs_again(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "INFERMODES_SERVE_LIVENESS_PORT": str(port),
        "INFERMODES_SERVE_LIVENESS_STALL_SECONDS": STALL_SECONDS,
    }
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "2"]
    with running_server(args, tmp_path / "serve.log", env) as server:
        parent = psutil.Process(server.proc.pid)
        wait_until(lambda: len(split_children(parent, port)[0]) == 2, 10, "two workers")
        wait_until(lambda: liveness(port).status_code == 200, 10, "liveness")
        stuck = split_children(parent, port)[0][0]
        os.kill(stuck.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: liveness(port).status_code == 503, 20, "liveness to fail")
            assert "event loop silent for" in liveness(port).text
        finally:
            os.kill(stuck.pid, signal.SIGCONT)
        wait_until(lambda: liveness(port).status_code == 200, 20, "liveness to recover")
        assert liveness(port).text == "alive\n"


@contextmanager
def supervised(
    abalone_model: AbaloneModel, tmp_path: Path
) -> Iterator[tuple[ServerProcess, psutil.Process, int]]:
    """A server of two workers with a liveness port: (it, its supervisor, the port)."""
    port = free_port()
    env = {"INFERMODES_SERVE_LIVENESS_PORT": str(port)}
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "2"]
    with running_server(args, tmp_path / "serve.log", env) as server:
        yield server, psutil.Process(server.proc.pid), port


def test_the_supervisor_holds_no_thread_and_its_liveness_server_outlives_crashes(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """With several workers, the supervisor forks a new worker whenever one crashes: a fork
    while another thread of it held a lock (the liveness server's, writing to stderr) could
    leave the new worker blocked on that lock for good. So the liveness port is served by a
    process of its own: the supervisor has one thread, no worker listens on the liveness port
    (nor holds a probe's connection), and a crashed worker or liveness server is replaced
    while ``/healthz`` goes on answering."""
    with supervised(abalone_model, tmp_path) as (server, parent, port):
        wait_until(lambda: len(split_children(parent, port)[0]) == 2, 10, "two workers")
        wait_until(lambda: liveness(port).status_code == 200, 10, "liveness")
        assert parent.num_threads() == 1
        workers, servers = split_children(parent, port)
        assert len(servers) == 1, [c.pid for c in parent.children()]
        assert not any(listens_on(w, port) for w in workers)

        os.kill(workers[0].pid, signal.SIGKILL)
        wait_until(
            lambda: (
                workers[0].pid not in [w.pid for w in split_children(parent, port)[0]]
                and len(split_children(parent, port)[0]) == 2
            ),
            30,
            "the crashed worker to be replaced",
        )
        assert liveness(port).text == "alive\n"
        assert parent.num_threads() == 1

        os.kill(servers[0].pid, signal.SIGKILL)

        def replaced() -> bool:
            now = [s.pid for s in split_children(parent, port)[1]]
            return len(now) == 1 and now != [servers[0].pid]

        wait_until(replaced, 30, "the liveness server to be replaced")
        assert liveness(port).text == "alive\n"
        ping = httpx.get(f"{server.url}/ping", timeout=10)
        assert ping.status_code == 200


def test_the_liveness_process_ends_when_its_supervisor_is_killed(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A supervisor killed (the OOM killer) replaces no crashed worker any more: its liveness
    process must not go on answering ``alive`` for it (as the port closed with the supervisor
    when a thread of it served the port); it ends, and the probe fails."""
    with supervised(abalone_model, tmp_path) as (_, parent, port):
        wait_until(lambda: len(split_children(parent, port)[1]) == 1, 10, "the liveness process")
        [process] = split_children(parent, port)[1]
        assert liveness(port).status_code == 200
        os.kill(parent.pid, signal.SIGKILL)
        wait_until(lambda: not running(process), 20, "the liveness process to end")
        with pytest.raises(httpx.ConnectError):
            liveness(port)
