"""The embedded queue with real processes on one file: worker processes running the real
``Processor`` (predict, store, notify) through ``broker_from_url``, one of them SIGKILLed while
it holds requests, and every process killed with accepted requests waiting. Leases are 2 s, so
a dead worker's requests come back quickly."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from infermodes.queueing.connect import broker_from_url
from infermodes.queueing.embedded import EmbeddedQueue
from tests.conftest import AbaloneModel
from tests.support.async_plane import Process, to_csv, wait_consuming
from tests.support.processes import stop_process, wait_until
from tests.support.queue_worker import (
    accepted,
    computed_once,
    finished,
    read_records,
    request,
    spawn,
    spawn_submitter,
    successes,
)

WAIT = 60.0


def open_queue(tmp_path: Path) -> tuple[str, EmbeddedQueue]:
    url = f"sqlite://{tmp_path}/queue.db?lease_seconds=2"
    queue = broker_from_url(url)
    assert isinstance(queue, EmbeddedQueue)
    return url, queue


@contextmanager
def cleanup() -> Iterator[list[Process]]:
    """Every process the test adds to the list is stopped (by PID) when it ends."""
    started: list[Process] = []
    try:
        yield started
    finally:
        for each in started:
            stop_process(each.proc)


def outputs(folder: Path) -> dict[str, np.ndarray]:
    """Result objects by inference id (a dot starts an interrupted write's temp file)."""
    return {
        path.name.removesuffix(".out"): np.array(path.read_text().split(), "f4")
        for path in (folder / "output").glob("*.out")
        if not path.name.startswith(".")
    }


def test_a_worker_killed_mid_way_loses_nothing_and_each_request_is_computed_once(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    url, queue = open_queue(tmp_path)
    endpoint, results, folder = "crash", tmp_path / "results", tmp_path / "objects"
    model = f"file://{abalone_model.tarball}"
    rows = abalone_model.test_rows
    expected = abalone_model.booster().inplace_predict(rows)  # type: ignore[attr-defined]
    picks = {f"r{i}": [(i * 7 + k) % len(rows) for k in range(1 + i % 50)] for i in range(300)}
    enqueuer = queue.enqueuer({endpoint: 3}, 1)
    for inference_id, picked in picks.items():
        message = request(folder, endpoint, inference_id, to_csv(rows[picked]))
        enqueuer.submit(endpoint, inference_id, message.to_bytes())
    enqueuer.close()
    with cleanup() as started:
        # the victim takes 5 s per request, so it surely holds two when it is killed
        victim = spawn(url, endpoint, results, model, concurrency=2, delay=5.0)
        started.append(victim)
        wait_consuming(victim)
        for _ in range(2):
            started.append(spawn(url, endpoint, results, model, concurrency=2, delay=0.01))
        for worker in started:
            wait_consuming(worker)
        wait_until(
            lambda: (
                len(outputs(folder)) >= 60
                and sum(h.pid == victim.proc.pid for h in queue.held(endpoint)) == 2
            ),
            WAIT,
            "60 outputs with the victim holding two requests",
        )
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(WAIT)
        lost = {h.message_id for h in queue.held(endpoint) if h.pid == victim.proc.pid}
        done_at_kill = len(outputs(folder))
        assert done_at_kill < 300, "the workers finished before one could be killed"
        wait_until(
            lambda: len(outputs(folder)) == 300 and queue.backlog(endpoint).total == 0,
            WAIT,
            "300 outputs",
        )
    assert len(lost) == 2
    assert finished(results) == set(picks)
    assert computed_once(results)
    redelivered = {r.inference_id for r in read_records(results) if r.attempt > 0}
    assert lost <= redelivered
    written = outputs(folder)
    assert set(written) == set(picks)
    for inference_id, picked in picks.items():
        np.testing.assert_array_equal(written[inference_id], expected[picked])
    assert not list((folder / "failure").glob("*"))
    assert queue.dead_letters(endpoint) == []
    notified = Counter(n.message_id for n in queue.tail(f"{endpoint}.success", limit=1000))
    assert set(notified) == set(picks)


def test_everything_killed_with_requests_accepted_completes_them_all_after_a_restart(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    url, queue = open_queue(tmp_path)
    endpoint, results, folder = "restart", tmp_path / "results", tmp_path / "objects"
    model = f"file://{abalone_model.tarball}"
    csv = tmp_path / "rows.csv"
    csv.write_bytes(to_csv(abalone_model.test_rows[:5]))
    with cleanup() as started:
        for _ in range(2):
            started.append(spawn(url, endpoint, results, model, concurrency=2, delay=0.2))
        for worker in started:
            wait_consuming(worker)
        submitter = spawn_submitter(url, endpoint, 100, folder, csv)
        started.append(submitter)
        wait_until(
            lambda: len(accepted(submitter)) == 100 and sum(successes(results).values()) >= 10,
            WAIT,
            "100 accepted and 10 done",
        )
        for each in started:  # everything at once, the submitter with its connection open
            each.proc.send_signal(signal.SIGKILL)
        for each in started:
            each.proc.wait(WAIT)
        done_before = finished(results)
        assert len(done_before) < 100, "everything finished before the kill"
        waiting = queue.backlog(endpoint).total
        assert waiting is not None and waiting >= 100 - len(done_before)  # none lost
        for _ in range(2):
            started.append(spawn(url, endpoint, results, model, concurrency=2))
        wait_until(
            lambda: len(finished(results)) == 100 and queue.backlog(endpoint).total == 0,
            WAIT,
            "all 100 after the restart",
        )
    assert finished(results) == accepted(submitter)
    assert computed_once(results)
    assert set(outputs(folder)) == accepted(submitter)
    assert queue.dead_letters(endpoint) == []


def test_a_claimed_success_no_delivery_can_store_is_notified_before_the_queue_buries_it(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The embedded queue's last delivery is the limit's, with none after it: a success
    claimed by a copy that died, whose input is then gone, is notified (``OutputNotStored``)
    and dead-lettered by a worker (``rejected``), not buried by the queue unsaid."""
    url, queue = open_queue(tmp_path)
    endpoint, results, folder = "orphan", tmp_path / "results", tmp_path / "objects"
    message = request(folder, endpoint, "r0", b"")
    message = message.model_copy(update={"claim_location": f"file://{folder}/input/r0.result"})
    (folder / "input/r0.csv").unlink()
    (folder / "input/r0.result").write_bytes(b"")  # the success claim the dead copy left
    enqueuer = queue.enqueuer({endpoint: 1}, 1)
    enqueuer.submit(endpoint, "r0", message.to_bytes())
    enqueuer.close()
    with cleanup() as started:
        worker = spawn(url, endpoint, results, f"file://{abalone_model.tarball}", max_attempts=1)
        started.append(worker)
        wait_until(lambda: bool(queue.dead_letters(endpoint)), WAIT, "the dead-letter")
    [dead] = queue.dead_letters(endpoint)
    assert (dead.message_id, dead.reason, dead.deliveries) == ("r0", "rejected", 3)
    [note] = queue.tail(f"{endpoint}.error")
    assert json.loads(note.body)["failureReason"] == "OutputNotStored"
    assert not (folder / "failure").exists() and not (folder / "output").exists()
