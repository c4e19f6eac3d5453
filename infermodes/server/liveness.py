"""Liveness of the model server's workers, answered off their event loops.

A worker predicts small requests on its event loop (``InvocationsHandler``), so its own port
cannot answer a probe while a long prediction runs: a kubelet probing ``/ping`` there would
restart a busy, healthy server. Instead each worker's loop stamps its slot of a table shared
across the fork every ``TICK_SECONDS``, and marks the predictions it runs; the liveness port
answers ``GET /healthz`` from a thread of the only worker, or beside several from a process of
its own that the supervisor forks (``runner.Supervisor``: it forks workers again whenever one
crashes, and so must never hold a thread): 503 naming each worker whose loop has neither
ticked for ``stall_seconds`` nor is predicting (a deadlock, a stuck loop), 200 otherwise. A
worker not yet ticking (a replacement loading its model before it serves) is not stalled: the
supervisor restarts crashed workers itself.
"""

from __future__ import annotations

import asyncio
import math
import mmap
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

from infermodes.metrics import LIVENESS_PATH, text_headers, wsgi_server

TICK_SECONDS = 1.0
_SLOT = struct.Struct("dd")  # last tick, since when some prediction is in progress (0: none)


class LivenessTable:
    """One slot per worker in memory shared with the processes forked after it is made."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.memory = mmap.mmap(-1, _SLOT.size * workers)  # anonymous: shared across fork

    def write(self, index: int, tick: float, predicting_since: float) -> None:
        _SLOT.pack_into(self.memory, index * _SLOT.size, tick, predicting_since)

    def read(self, index: int) -> tuple[float, float]:
        tick, since = _SLOT.unpack_from(self.memory, index * _SLOT.size)
        return float(tick), float(since)

    def reset(self, index: int) -> None:
        """A worker gone, or about to start: not ticking yet, so not stalled."""
        self.write(index, 0.0, 0.0)

    def report(
        self, now: float, stall_seconds: float, longest_prediction: float = math.inf
    ) -> tuple[list[str], list[str]]:
        """The stalled workers (a loop silent for over ``stall_seconds`` while it predicts
        nothing, or predicting for over ``longest_prediction``: a hung predict call, which no
        client waits for any more) and the predicting ones, a line each."""
        stalled, predicting = [], []
        for index in range(self.workers):
            tick, since = self.read(index)
            if since and now - since > longest_prediction:
                stalled.append(
                    f"worker {index}: predicting for {now - since:.1f} s, "
                    f"past {longest_prediction:g} s"
                )
            elif since:
                predicting.append(f"worker {index}: predicting for {now - since:.1f} s")
            elif tick and now - tick > stall_seconds:
                stalled.append(f"worker {index}: event loop silent for {now - tick:.1f} s")
        return stalled, predicting


class WorkerBeat:
    """A worker's side of its slot: the loop's ticks, and the predictions in progress (on the
    loop, or on the offload thread, which leaves the loop ticking). Its own context manager
    (``with beat.predicting():``), not a generator's: it wraps every predict call."""

    def __init__(
        self, table: LivenessTable, index: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.table = table
        self.index = index
        self.clock = clock
        self.tick_at = 0.0
        self.busy = 0  # predictions in progress
        self.busy_since = 0.0  # since when some have been, without a pause (0: none)
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            self.tick_at = self.clock()
            self.table.write(self.index, self.tick_at, self.busy_since)

    def predicting(self) -> WorkerBeat:
        return self

    def __enter__(self) -> None:
        with self.lock:
            if not self.busy:
                self.busy_since = self.clock()
            self.busy += 1
            self.table.write(self.index, self.tick_at, self.busy_since)

    def __exit__(self, *_: object) -> None:
        with self.lock:
            self.busy -= 1
            if not self.busy:
                self.busy_since = 0.0
            self.table.write(self.index, self.tick_at, self.busy_since)

    async def tick_forever(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(TICK_SECONDS)


def liveness_server(
    host: str,
    port: int,
    table: LivenessTable,
    stall_seconds: float,
    longest_prediction: float,
    clock: Callable[[], float] = time.monotonic,
) -> WSGIServer:
    """``GET``/``HEAD /healthz``, bound and listening, for its caller to serve (a thread of the
    only worker, or a process of its own beside several: ``runner.Supervisor``): 200 ``alive``
    (and the predicting workers), or 503 naming the stalled ones; any other path is 404."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != LIVENESS_PATH:
            body = f"only {LIVENESS_PATH} is served here\n".encode()
            start_response("404 Not Found", text_headers(body))
            return [body]
        stalled, predicting = table.report(clock(), stall_seconds, longest_prediction)
        body = "\n".join(stalled or ["alive", *predicting]).encode() + b"\n"
        start_response("503 Service Unavailable" if stalled else "200 OK", text_headers(body))
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    return wsgi_server(host, port, app)
