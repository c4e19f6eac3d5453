"""The micro-batcher in one event loop: who joins a batch, what each request gets back, and
what a failure or a cancellation does to the others."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import xgboost as xgb
from prometheus_client import CollectorRegistry

from infermodes.errors import InvalidInput
from infermodes.metrics import ServerMetrics
from infermodes.predict.model import XGBoostModel
from infermodes.predict.native import NativeBooster
from infermodes.server.batching import Batcher


class CountingModel(XGBoostModel):
    """A real booster that remembers the row counts it was asked to predict, and can be told
    to fail on any call that includes a row whose first feature is ``poison``."""

    calls: list[int]
    poison: float | None = None

    def predict(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(rows.shape[0])
        if self.poison is not None and (rows[:, 0] == self.poison).any():
            raise RuntimeError("XGBoost prediction failed: poisoned row")
        return super().predict(rows)


@pytest.fixture
def model() -> CountingModel:
    features = np.random.default_rng(3).random((50, 4), dtype=np.float32)
    booster = xgb.train({"nthread": 1}, xgb.DMatrix(features, features.sum(axis=1)), 5)
    native = NativeBooster(bytes(booster.save_raw("ubj")))
    counting = CountingModel(native, native.num_features)
    counting.calls = []
    return counting


def requests(count: int, rows_each: int = 2) -> list[np.ndarray]:
    data = np.random.default_rng(4).random((count * rows_each, 4), dtype=np.float32)
    return [data[i * rows_each : (i + 1) * rows_each] for i in range(count)]


def batcher(max_rows: int = 128, wait_us: int = 0, connections: int | None = None) -> Batcher:
    count = None if connections is None else (lambda: connections)
    return Batcher(ServerMetrics(CollectorRegistry()), max_rows, wait_us, count)


def alone(model: XGBoostModel, parts: list[np.ndarray]) -> list[np.ndarray]:
    return [model.booster.predict(part) for part in parts]


async def together(b: Batcher, model: XGBoostModel, parts: list[np.ndarray]) -> list[object]:
    """All requests started in the same loop turn, as uvicorn starts the requests of one read."""
    results: list[object] = await asyncio.gather(
        *(b.predict(model, part) for part in parts), return_exceptions=True
    )
    return results


def test_requests_of_one_turn_are_one_call_and_each_gets_its_own_rows(
    model: CountingModel,
) -> None:
    parts = requests(6)
    got = asyncio.run(together(batcher(), model, parts))
    assert model.calls == [12]
    for mine, expected in zip(got, alone(model, parts), strict=True):
        assert isinstance(mine, np.ndarray)
        np.testing.assert_array_equal(mine, expected)


def test_max_rows_caps_a_batch_and_a_larger_request_is_predicted_alone(
    model: CountingModel,
) -> None:
    parts = [*requests(5), np.zeros((9, 4), dtype=np.float32)]
    got = asyncio.run(together(batcher(max_rows=4), model, parts))
    assert sorted(model.calls) == [2, 4, 4, 9]  # 2+2 | 2+2 | 2 | 9 alone
    for mine, expected in zip(got, alone(model, parts), strict=True):
        np.testing.assert_array_equal(mine, expected)


def test_one_open_connection_predicts_at_once(model: CountingModel) -> None:
    parts = requests(3)
    asyncio.run(together(batcher(connections=1), model, parts))
    assert model.calls == [2, 2, 2]


def test_a_window_waits_for_a_full_batch(model: CountingModel) -> None:
    """With a window, requests started in different turns share a call once the rows fill it
    (the window is long: the batch flushes because it is full)."""

    async def staggered() -> list[np.ndarray]:
        b = batcher(max_rows=6, wait_us=1_000_000)
        tasks = []
        for part in requests(3):
            tasks.append(asyncio.ensure_future(b.predict(model, part)))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        return list(await asyncio.gather(*tasks))

    asyncio.run(staggered())
    assert model.calls == [6]


def test_a_failing_batch_is_retried_alone_so_only_the_bad_request_fails(
    model: CountingModel,
) -> None:
    parts = requests(4)
    parts[2] = parts[2].copy()
    parts[2][0, 0] = model.poison = 7.0
    got = asyncio.run(together(batcher(), model, parts))
    assert model.calls == [8, 2, 2, 2, 2]
    assert isinstance(got[2], RuntimeError)
    model.poison = None
    for index in (0, 1, 3):
        np.testing.assert_array_equal(got[index], alone(model, [parts[index]])[0])


def test_a_wrong_width_never_joins(model: CountingModel) -> None:
    parts: list[np.ndarray] = [*requests(2), np.zeros((1, 3), dtype=np.float32)]
    got = asyncio.run(together(batcher(), model, parts))
    assert isinstance(got[2], InvalidInput)
    assert sorted(model.calls) == [1, 4]


def test_a_cancelled_leader_still_answers_its_followers(model: CountingModel) -> None:
    async def cancel_the_leader() -> tuple[bool, list[np.ndarray]]:
        b = batcher()
        parts = requests(3)
        leader = asyncio.ensure_future(b.predict(model, parts[0]))
        followers = [asyncio.ensure_future(b.predict(model, part)) for part in parts[1:]]
        await asyncio.sleep(0)  # everyone has joined; the leader waits out its turn
        leader.cancel()
        results = await asyncio.gather(*followers)
        with pytest.raises(asyncio.CancelledError):
            await leader
        return leader.cancelled(), results

    cancelled, results = asyncio.run(cancel_the_leader())
    assert cancelled
    assert model.calls == [6]
    for mine, expected in zip(results, alone(model, requests(3)[1:]), strict=True):
        np.testing.assert_array_equal(mine, expected)


class SleepingModel(CountingModel):
    """A real booster whose every call takes ``seconds`` at least, as a large model's would."""

    seconds = 0.0

    def predict(self, rows: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return super().predict(rows)


def test_a_prediction_fits_the_loop_by_the_last_calls_seconds_per_row(
    model: CountingModel,
) -> None:
    """Nothing measured yet: anything fits; once a call of one row took 0.05 s at least, a
    row does not fit a 0.01 s budget; once a call of 20,000 rows took what it takes (well
    under 10 s: 500 us a row), 20 rows fit it again: the last call is what counts."""
    slow = SleepingModel(model.booster, model.num_features, trees=model.trees)
    slow.calls, slow.seconds = [], 0.05
    b = Batcher(ServerMetrics(CollectorRegistry()), 128, loop_seconds=0.01)
    assert b.fits_loop(10**9)
    b.predict_now(slow, requests(1, rows_each=1)[0])
    assert not b.fits_loop(1)
    slow.seconds = 0.0
    b.predict_now(slow, requests(1, rows_each=20_000)[0])  # one fast call of many rows
    assert b.fits_loop(20)


def test_a_model_slow_per_row_is_measured_at_load_and_a_failing_one_is_left_unmeasured(
    model: CountingModel, caplog: pytest.LogCaptureFixture
) -> None:
    slow = SleepingModel(model.booster, model.num_features, trees=model.trees)
    slow.calls, slow.seconds = [], 0.05
    b = Batcher(ServerMetrics(CollectorRegistry()), 128, loop_seconds=0.01)
    b.time_one_row(slow)
    assert slow.calls == [1] and not b.fits_loop(1)
    failing = SleepingModel(model.booster, model.num_features, trees=model.trees)
    failing.calls, failing.seconds = [], -1.0  # time.sleep(-1) raises ValueError
    fresh = Batcher(ServerMetrics(CollectorRegistry()), 128, loop_seconds=0.01)
    fresh.time_one_row(failing)
    assert fresh.fits_loop(10**9)
    assert "cannot time a prediction of one row (ValueError" in caplog.text
