"""Adaptive micro-batching of one worker's concurrent requests into one predict call.

XGBoost's C predict costs ~20 µs per call whatever the rows (setup, not trees), so requests
that are in the worker together are cheaper predicted together. Models the exact tree evaluator
predicts (``predict.trees``: ~1 µs per call) are not batched unless a window is asked for:
joining a batch would cost more than the call it shares. No fixed window by default:
the first request of a batch (its leader) yields one event-loop turn, in which the requests
already parsed beside it decode and join, then predicts for all; requests that arrive while
that prediction runs form the next batch. A lone request pays one loop turn, not a timer.
``max_wait_us`` (KServe ``maxLatency``, MLServer ``max_batch_time``) lets users trade latency
for larger batches; ``max_rows`` (KServe ``maxBatchSize``, MLServer ``max_batch_size``) caps a
batch. Rows are scored independently, so each request's slice is exactly what it would have
been alone; only decoded, well-formed requests join, and if a batch's predict fails anyway its
requests are retried one by one, so that only the faulty one fails.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np

from infermodes.metrics import ServerMetrics
from infermodes.predict.model import XGBoostModel

log = logging.getLogger("infermodes.serve")


class _Batch:
    """Requests collected by one leader: their rows and, but for the leader's, their futures."""

    __slots__ = ("count", "full", "model", "rows", "waiters")

    def __init__(self, model: XGBoostModel, rows: np.ndarray) -> None:
        self.model = model
        self.rows = [rows]
        self.count = rows.shape[0]
        self.waiters: list[asyncio.Future[np.ndarray]] = []
        self.full: asyncio.Future[None] | None = None


class Batcher:
    """Per worker (one event loop); ``max_rows`` 1 turns batching off. ``connections`` counts
    the worker's open connections: with one, no other request can be in the same loop turn
    (HTTP/1.1 answers a connection's requests in order), so a lone client's request is
    predicted at once, without the turn."""

    def __init__(
        self,
        metrics: ServerMetrics,
        max_rows: int,
        max_wait_us: int = 0,
        connections: Callable[[], int] | None = None,
        predicting: Callable[[], AbstractContextManager[None]] = nullcontext,
        loop_seconds: float = math.inf,
    ) -> None:
        self.metrics = metrics
        self.predicting = predicting  # the liveness table's mark (``liveness.WorkerBeat``)
        self.loop_seconds = loop_seconds
        self.seconds_per_row = 0.0  # of the last predict call: what the next is judged by
        self.max_rows = max_rows
        self.max_wait = max_wait_us / 1e6
        self.connections = connections
        self.open: _Batch | None = None

    def predict_now(self, model: XGBoostModel, rows: np.ndarray) -> np.ndarray:
        """One predict call, recorded (it raises InvalidInput for a wrong feature count)."""
        started = time.perf_counter()
        with self.predicting():
            predictions = model.predict(rows)
        seconds = time.perf_counter() - started
        self.seconds_per_row = seconds / max(rows.shape[0], 1)
        self.metrics.predicted(rows.shape[0], seconds)
        return predictions

    def fits_loop(self, rows: int) -> bool:
        """Whether a prediction of ``rows`` may run on the event loop: expected, at the last
        call's seconds per row, to end within ``loop_seconds``. A longer one goes to a thread
        (``InvocationsHandler``): on the loop it would keep the worker from answering ``/ping``
        and every other request until it ends, and take a busy replica out of service."""
        return rows * self.seconds_per_row <= self.loop_seconds

    def time_one_row(self, model: XGBoostModel) -> None:
        """Measure a row of missing values once the model is loaded, so that a model slow per
        row is predicted off the loop from its first request (not recorded as a prediction).
        One that fails is logged, and the first request measures instead: the model loaded."""
        started = time.perf_counter()
        try:
            model.predict(np.full((1, model.num_features), np.nan, dtype=np.float32))
        except Exception as exc:
            log.warning("cannot time a prediction of one row (%s: %s)", type(exc).__name__, exc)
            return
        self.seconds_per_row = time.perf_counter() - started

    def predicts_alone(self, model: XGBoostModel) -> bool:
        """Whether every request for ``model`` is predicted on its own, at once: no window
        asked for, and its calls cost too little to share."""
        return not self.max_wait and not model.calls_are_shared_cost

    async def predict(self, model: XGBoostModel, rows: np.ndarray) -> np.ndarray:
        """The predictions for ``rows``, possibly computed in one call with other requests'."""
        count = rows.shape[0]
        if count >= self.max_rows or rows.ndim != 2 or rows.shape[1] != model.num_features:
            return self.predict_now(model, rows)  # too big to share, or its error is its own
        if self.predicts_alone(model) or (
            not self.max_wait and self.connections is not None and self.connections() < 2
        ):
            return self.predict_now(model, rows)  # nothing to share, or nobody to share with
        batch = self.open
        if batch is not None and batch.model is model and batch.count + count <= self.max_rows:
            return await self._join(batch, rows)
        batch = self.open = _Batch(model, rows)
        try:
            await self._collect(batch)
        finally:  # even when the leader is cancelled, its followers get their answers
            if self.open is batch:
                self.open = None
            results = self._predict_batch(batch)
        if isinstance(results, BaseException):
            raise results
        return results

    async def _join(self, batch: _Batch, rows: np.ndarray) -> np.ndarray:
        waiter: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        batch.rows.append(rows)
        batch.waiters.append(waiter)
        batch.count += rows.shape[0]
        if batch.full is not None and batch.count >= self.max_rows and not batch.full.done():
            batch.full.set_result(None)
        return await waiter

    async def _collect(self, batch: _Batch) -> None:
        """Let the others join: one loop turn, or until ``max_wait`` passes or the batch is
        full."""
        if not self.max_wait:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        batch.full = loop.create_future()
        timer = loop.call_later(self.max_wait, _settle, batch.full)
        try:
            await batch.full
        finally:
            timer.cancel()

    def _predict_batch(self, batch: _Batch) -> np.ndarray | BaseException:
        """Predict every request of the batch, settle the followers; the leader's result."""
        if not batch.waiters:
            return self._alone(batch.model, batch.rows[0])
        try:
            predictions = self.predict_now(batch.model, np.concatenate(batch.rows))
        except Exception:  # retry alone: only the request that fails gets the error
            outcomes = [self._alone(batch.model, rows) for rows in batch.rows]
        else:
            outcomes = []
            start = 0
            for rows in batch.rows:
                end = start + rows.shape[0]
                outcomes.append(predictions[start:end])
                start = end
        for waiter, outcome in zip(batch.waiters, outcomes[1:], strict=True):
            if waiter.done():  # its request was cancelled
                continue
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        return outcomes[0]

    def _alone(self, model: XGBoostModel, rows: np.ndarray) -> np.ndarray | BaseException:
        try:
            return self.predict_now(model, rows)
        except Exception as exc:
            return exc


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
