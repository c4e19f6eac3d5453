"""Where mini-batches are transformed, and how each is attempted.

One transform at a time runs in the runner's own process. ``maxConcurrentTransforms`` above 1
runs that many at once: in threads of the runner's process when the transform is native CSV
(``Transform.native``: parsing and XGBoost release the GIL, formatting is a few per cent of the
time), else in worker processes, as the platform sends concurrent requests to a model server's
worker processes: decoding and encoding JSON or filtered lines is Python code that holds the
GIL (measured: two threads transform no faster than one). Threads share the model and cost
nothing to start; processes cost an interpreter and a model each, and every mini-batch and its
output crosses a pipe (measured: ~6 % of the CPU time). Workers are spawned, not forked (a
fork after XGBoost's OpenMP runtime has started can hang), and each loads the model once.

Attempts: failures other than bad input are retried ``invocationsMaxRetries`` times, and an
attempt over ``invocationsTimeoutInSeconds`` counts as failed (an in-process call cannot be
interrupted, so it is timed, then judged). Bad input is not retried: it would fail the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from infermodes.jsonpath import JsonPath
from infermodes.logs import configure_logging
from infermodes.predict import codecs
from infermodes.predict.model import XGBoostModel
from infermodes.storage import Storage
from infermodes.workers.batch.records import BadRecord, MiniBatch
from infermodes.workers.batch.transform import Transform

if TYPE_CHECKING:
    from infermodes.settings import BatchSettings

log = logging.getLogger("infermodes.batch")


@dataclass(frozen=True)
class Done:
    """A transformed mini-batch and what its attempts took, for the runner's metrics (worker
    processes have no registry of their own)."""

    output: bytes
    records: int  # as splitType cuts them: a line, or a whole JSON document (``Transform``)
    rows: int  # predicted: a JSON record may hold several
    input_bytes: int
    predict_seconds: float
    failed_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0


class TimedPredict:
    """The model's predict, timed: the runner reports the time as predict latency."""

    def __init__(self, model: XGBoostModel) -> None:
        self.model = model
        self.seconds = 0.0
        self.rows = 0

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.rows += rows.shape[0]
        started = time.perf_counter()
        try:
            return self.model.predict(rows)
        finally:
            self.seconds += time.perf_counter() - started


def make_transform(
    settings: BatchSettings, num_features: int, predict: Callable[[np.ndarray], np.ndarray]
) -> Transform:
    """Raises ValueError for a filter outside the supported JSONPath subset."""
    return Transform(
        num_features=num_features,
        content_type=settings.content_type,
        accept=settings.accept,
        # the spec's names, as the runner's other reasons name fields (maxPayloadInMB)
        input_filter=JsonPath.parse(settings.input_filter, "inputFilter"),
        output_filter=JsonPath.parse(settings.output_filter, "outputFilter"),
        join=settings.join_source == "Input",
        assemble_lines=settings.assemble_with == "Line",
        whole_documents=settings.content_type == codecs.JSON and settings.split_type == "None",
        predict=predict,
    )


class MiniBatchWorker:
    def __init__(self, settings: BatchSettings, model: XGBoostModel) -> None:
        self.predict = TimedPredict(model)
        self.transform = make_transform(settings, model.num_features, self.predict)
        self.retries = settings.invocations_max_retries
        self.timeout = settings.invocations_timeout_in_seconds

    def __call__(self, batch: MiniBatch) -> Done:
        failed: list[float] = []
        problem = ""
        for attempt in range(self.retries + 1):
            self.predict.seconds, self.predict.rows = 0.0, 0
            started = time.perf_counter()
            try:
                output, records = self.transform(batch)
            except BadRecord:
                raise
            except Exception as exc:  # anything else may be transient: retry it
                problem = f"{type(exc).__name__}: {exc}"
            else:
                elapsed = time.perf_counter() - started
                if elapsed <= self.timeout:
                    predicted = self.predict
                    return Done(output, records, predicted.rows, len(batch.data),
                                predicted.seconds, failed, elapsed)  # fmt: skip
                problem = f"took {elapsed:.3g} s, over the invocation timeout of {self.timeout:g} s"
            failed.append(time.perf_counter() - started)
            if attempt < self.retries:
                log.warning("mini-batch at line %d: %s; retrying", batch.first_line, problem)
        raise BadRecord(
            batch.first_line,
            f"the mini-batch starting here failed {self.retries + 1} attempt(s); last: {problem}",
        )


_process_worker: MiniBatchWorker | None = None


def _start_process(settings: BatchSettings) -> None:
    global _process_worker
    configure_logging(settings.log_level)
    model = XGBoostModel.load(
        settings.model_uri, Storage(), settings.allow_pickle, settings.predict_threads
    )
    _process_worker = MiniBatchWorker(settings, model)


def run_in_process(batch: MiniBatch) -> Done:
    """What a worker process runs for each mini-batch."""
    if _process_worker is None:
        raise RuntimeError("the batch worker process was not initialised")
    return _process_worker(batch)


class ThreadWorkers:
    """A MiniBatchWorker per thread (each times its own predictions), one model for all."""

    def __init__(self, settings: BatchSettings, model: XGBoostModel) -> None:
        self.settings = settings
        self.model = model
        self.local = threading.local()

    def __call__(self, batch: MiniBatch) -> Done:
        worker: MiniBatchWorker | None = getattr(self.local, "worker", None)
        if worker is None:
            worker = self.local.worker = MiniBatchWorker(self.settings, self.model)
        return worker(batch)


def concurrent_workers(
    settings: BatchSettings, model: XGBoostModel, transform: Transform
) -> tuple[Executor, Callable[[MiniBatch], Done]]:
    """``maxConcurrentTransforms`` transforms at once: the executor and what it runs."""
    if transform.native:
        return ThreadPoolExecutor(settings.max_concurrent_transforms), ThreadWorkers(
            settings, model
        )
    processes = ProcessPoolExecutor(
        settings.max_concurrent_transforms,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_process,
        initargs=(settings,),
    )
    return processes, run_in_process
