"""A batch instance's liveness: the mini-batches in flight and when each was handed out
(``runner.InFlight``, kept by ``runner.ordered``), judged against what their attempts may take
(``BatchSettings.liveness_bound_seconds``). The real probe:
tests/integration/batch/test_liveness.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from infermodes.settings import BatchSettings
from infermodes.workers.batch.runner import InFlight, ordered
from tests.unit.test_serve_liveness import Clock

REQUIRED = {"model_uri": "m", "input_uri": "s3://b/in/", "output_uri": "s3://b/out/"}


def test_the_oldest_mini_batch_in_flight_past_the_bound_is_stuck() -> None:
    clock = Clock()
    in_flight = InFlight(clock)
    assert in_flight.stuck(10) is None  # nothing in flight: listing, reading, loading
    in_flight.started.extend([100.0, 105.0])
    clock.now = 110.0
    assert in_flight.stuck(10) is None  # a long one, within what its attempts may take
    clock.now = 110.5
    assert (
        in_flight.stuck(10) == "a mini-batch has been in flight for 10.5 s, past the 10 s allowed"
    )
    in_flight.started.popleft()  # collected: the next is judged from its own start
    assert in_flight.stuck(10) is None


@pytest.mark.parametrize("workers", [None, 2])
def test_ordered_holds_each_item_in_flight_until_it_is_collected(workers: int | None) -> None:
    clock = Clock()
    in_flight = InFlight(clock)
    seen: list[int] = []

    def run(item: int) -> int:
        seen.append(len(in_flight.started))
        return item * 2

    executor = ThreadPoolExecutor(workers) if workers else None
    try:
        results = ordered(run, iter(range(5)), executor, workers or 1, in_flight)
        assert next(results) == 0 and len(in_flight.started) == (workers or 1) - 1
        assert list(results) == [2, 4, 6, 8]
    finally:
        if executor is not None:
            executor.shutdown()
    assert not in_flight.started  # all collected
    assert all(count >= 1 for count in seen)  # each ran while counted in flight


def test_items_left_when_the_caller_stops_are_not_in_flight_any_more() -> None:
    """A unit that fails or stops midway abandons its mini-batches: not a stuck instance."""
    in_flight = InFlight()
    with ThreadPoolExecutor(2) as executor:
        results = ordered(lambda item: item, iter(range(10)), executor, 2, in_flight)
        next(results)
        results.close()
    assert not in_flight.started


def test_the_bound_is_every_attempt_of_a_mini_batch_each_with_the_stall_allowance() -> None:
    """An attempt past its timeout is judged only when it ends: three attempts of 80 s against
    a 30 s timeout fail their mini-batch, which must not fail the pod (3 x 30 + 60 = 150 s
    would have)."""
    timing = {"invocations_timeout_in_seconds": 30, "liveness_stall_seconds": 60}
    settings = BatchSettings(**REQUIRED, invocations_max_retries=2, **timing)
    assert settings.liveness_bound_seconds == 3 * (30 + 60)
