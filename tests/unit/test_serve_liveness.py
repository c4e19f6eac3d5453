"""The model server's liveness table (``server.liveness``), on a fake clock: a worker is stalled
only when its loop is silent past the bound while it predicts nothing, whoever predicts (its
loop, or its offload thread beside it), and a slot not ticking yet is not stalled; and the
bounds the model server and the async worker take."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from infermodes.server.liveness import LivenessTable, WorkerBeat
from infermodes.settings import BROKER_CONNECT_TIMEOUT_SECONDS, ServeSettings, WorkerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_silent_loop_is_stalled_unless_it_predicts() -> None:
    clock, table = Clock(), LivenessTable(2)
    beat = WorkerBeat(table, 1, clock)
    assert table.report(clock.now, 10) == ([], [])  # neither ticks yet: loading, not stalled
    beat.tick()
    clock.now += 11
    assert table.report(clock.now, 10) == (["worker 1: event loop silent for 11.0 s"], [])
    with beat.predicting():  # the loop's own prediction: silent, but busy
        clock.now += 30
        assert table.report(clock.now, 10) == ([], ["worker 1: predicting for 30.0 s"])
    assert table.report(clock.now, 10)[0] == ["worker 1: event loop silent for 41.0 s"]


def test_a_prediction_past_the_longest_is_a_hung_worker() -> None:
    """A predict call that never returns (a deadlock in the library) kept /healthz at 200 for
    ever: no client waits that long, so past the bound it is stalled."""
    clock, table = Clock(), LivenessTable(1)
    beat = WorkerBeat(table, 0, clock)
    beat.tick()
    with beat.predicting():
        clock.now += 600
        assert table.report(clock.now, 10, 600) == ([], ["worker 0: predicting for 600.0 s"])
        clock.now += 1
        assert table.report(clock.now, 10, 600) == (
            ["worker 0: predicting for 601.0 s, past 600 s"],
            [],
        )


def test_overlapping_predictions_keep_it_busy_until_the_last_ends() -> None:
    clock, table = Clock(), LivenessTable(1)
    beat = WorkerBeat(table, 0, clock)
    beat.tick()
    loop, offloaded = beat.predicting(), beat.predicting()
    loop.__enter__()
    clock.now += 5
    offloaded.__enter__()
    loop.__exit__(None, None, None)  # the first ends: the other still runs
    clock.now += 20
    assert table.report(clock.now, 10) == ([], ["worker 0: predicting for 25.0 s"])
    offloaded.__exit__(None, None, None)
    assert table.report(clock.now, 10)[0] == ["worker 0: event loop silent for 25.0 s"]
    table.reset(0)  # gone (the supervisor reaped it): not stalled while it is replaced
    assert table.report(clock.now, 10) == ([], [])


@pytest.mark.parametrize(
    ("settings", "least"),
    [(ServeSettings, 2), (WorkerSettings, 2 * BROKER_CONNECT_TIMEOUT_SECONDS)],
    ids=["serve", "worker"],
)
def test_a_stall_bound_a_healthy_loop_could_exceed_is_refused(
    settings: type[ServeSettings | WorkerSettings], least: float
) -> None:
    """A model server's loop ticks every second: a bound below twice that would fail a healthy
    process between two ticks. A worker's consumer turns every 0.2 s but not while it connects
    to RabbitMQ (up to the connect timeout): a bound below twice that would fail every worker's
    probe in an ordinary broker outage."""
    base = {"model_uri": "file:///m", **({"endpoint": "e"} if settings is WorkerSettings else {})}
    with pytest.raises(ValidationError, match="liveness_stall_seconds"):
        settings.model_validate({**base, "liveness_stall_seconds": least - 0.1})
    assert settings.model_validate({**base, "liveness_stall_seconds": least})


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("INFERMODES_WORKER_LIVENESS_STALL_SECONDS", "9.5",
         "INFERMODES_WORKER_LIVENESS_STALL_SECONDS: Input should be greater than or equal to 10"),
        ("INFERMODES_WORKER_BROKER_URL", "amqp://u:hidden-pw@127.0.0.1:5672/%2F?stack_timeout=40",
         "INFERMODES_WORKER_LIVENESS_STALL_SECONDS: 60 is under twice the broker URL's "
         "stack_timeout"),
    ],
    ids=["under the least", "under twice the URL's handshake"],
)  # fmt: skip
def test_a_worker_started_with_a_stall_bound_under_its_connect_span_exits_naming_it(
    variable: str, value: str, said: str
) -> None:
    """As a user sets it: a stall bound under the least, or under twice the handshake bound
    the broker URL names, stops the worker at start (exit 2), naming the variable to change
    (not the URL's password), before it loads a model or connects."""
    env = {**os.environ, variable: value}
    started = subprocess.run(
        [sys.executable, "-c", "from infermodes.cli import main; main()", "worker",
         "--endpoint", "e", "--model", "file:///absent/model.tar.gz"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert started.returncode == 2, started.stderr
    assert said in started.stderr
    assert "hidden-pw" not in started.stderr


@pytest.mark.parametrize(
    ("query", "accepted"),
    [("", True), ("?stack_timeout=5", True), ("?stack_timeout=30", False)],
    ids=["none named", "within half", "over half"],
)
def test_a_worker_whose_broker_url_allows_a_longer_handshake_than_half_its_stall_is_refused(
    query: str, accepted: bool
) -> None:
    """A broker URL's stack_timeout bounds a connect's handshake, a span the consumer loops do
    not turn in: one over half the stall bound would fail the probe of every worker when a
    broker takes connections and does not answer, so it is refused naming both."""
    given = {"model_uri": "file:///m", "endpoint": "e", "liveness_stall_seconds": 10}
    given["broker_url"] = f"amqp://guest:guest@127.0.0.1:5672/%2F{query}"
    if accepted:
        assert WorkerSettings.model_validate(given)
        return
    with pytest.raises(ValidationError, match=r"under twice the broker URL's stack_timeout \(30"):
        WorkerSettings.model_validate(given)
