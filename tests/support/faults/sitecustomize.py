"""Fault injection for tests of real ``infermodes`` processes: a test puts this folder on the
child's PYTHONPATH and sets ``INFERMODES_TEST_FAILING_PREDICTS=N``; the first N predictions
of the process then raise, as a transient failure would. ``INFERMODES_TEST_BROKEN_GATEWAY=TEXT``
makes a gateway's endpoint lookups and its ``/metrics`` raise an unexpected error whose message is
TEXT, as a bug would. ``INFERMODES_TEST_BROKEN_ADMISSION=TEXT`` makes a gateway's check of a
request's caller, before any route, raise such an error for the requests that carry the
header ``x-test-broken`` (so that its readiness still answers).
``INFERMODES_TEST_BROKEN_REFUSAL=TEXT`` makes a gateway's refusal of a caller before any route
(``auth.refuse``: a foreign Host, say) start its answer and then raise such an error.
``INFERMODES_TEST_HELD_PREDICT=PATH`` makes each prediction started while
``PATH`` exists a long one: it touches ``PATH.started`` and blocks until ``PATH`` is removed.
``INFERMODES_TEST_STUCK_CONSUMER=PATH`` stops a RabbitMQ consumer's loop while ``PATH`` exists,
as a deadlock would: the main thread's (the queue's), or with
``INFERMODES_TEST_STUCK_THREAD=NAME`` the one on the thread of that name (``webhook-outbox``:
the outbox's). Nothing happens without the variables.
"""

from __future__ import annotations

import os
import threading

_FAILURES = int(os.environ.get("INFERMODES_TEST_FAILING_PREDICTS", "0"))

if _FAILURES:
    import numpy as np

    from infermodes.predict import model

    _lock = threading.Lock()
    _left = [_FAILURES]
    _predict = model.XGBoostModel.predict  # the one predict core, whichever evaluator it uses

    def _failing_predict(self: model.XGBoostModel, rows: np.ndarray) -> np.ndarray:
        with _lock:
            failing = _left[0] > 0
            _left[0] -= 1
        if failing:
            raise RuntimeError("injected transient failure")
        return _predict(self, rows)

    model.XGBoostModel.predict = _failing_predict  # type: ignore[method-assign]

_BROKEN_GATEWAY = os.environ.get("INFERMODES_TEST_BROKEN_GATEWAY", "")

if _BROKEN_GATEWAY:
    from typing import NoReturn

    from infermodes import http
    from infermodes.gateway import table

    def _broken(*_: object) -> NoReturn:
        raise RuntimeError(_BROKEN_GATEWAY)

    table.Table.lookup = _broken  # type: ignore[method-assign]  # the invocations' first call
    http.render = _broken  # /metrics, a FastAPI route

_HELD_PREDICT = os.environ.get("INFERMODES_TEST_HELD_PREDICT", "")

if _HELD_PREDICT:
    import time
    from pathlib import Path

    import numpy as np

    from infermodes.predict import model

    _hold = Path(_HELD_PREDICT)
    _unheld = model.XGBoostModel.predict

    def _held_predict(self: model.XGBoostModel, rows: np.ndarray) -> np.ndarray:
        """A long prediction while the file exists: it blocks the caller (the event loop,
        for a small body), as a big model's would, until the test removes the file."""
        if _hold.exists():
            Path(f"{_hold}.started").touch()
            while _hold.exists():
                time.sleep(0.01)
        return _unheld(self, rows)

    model.XGBoostModel.predict = _held_predict  # type: ignore[method-assign]

_STUCK_CONSUMER = os.environ.get("INFERMODES_TEST_STUCK_CONSUMER", "")

if _STUCK_CONSUMER:
    import time
    from pathlib import Path

    import pika

    _stuck = Path(_STUCK_CONSUMER)
    _stuck_thread = os.environ.get("INFERMODES_TEST_STUCK_THREAD", "")
    _serve = pika.BlockingConnection.process_data_events

    def _on_stuck_thread() -> bool:
        if _stuck_thread:
            return threading.current_thread().name == _stuck_thread
        return threading.current_thread() is threading.main_thread()

    def _stuck_serve(self: pika.BlockingConnection, time_limit: float | None = 0) -> None:
        """The consumer's loop on the chosen thread stops turning while the file exists."""
        while _stuck.exists() and _on_stuck_thread():
            time.sleep(0.01)
        _serve(self, time_limit)

    pika.BlockingConnection.process_data_events = _stuck_serve  # type: ignore[method-assign]

_BROKEN_ADMISSION = os.environ.get("INFERMODES_TEST_BROKEN_ADMISSION", "")

if _BROKEN_ADMISSION:
    from typing import Any

    from infermodes.gateway import auth

    _foreign_caller = auth.foreign_caller

    def _broken_admission(scope: Any) -> str | None:
        if any(name == b"x-test-broken" for name, _ in scope["headers"]):
            raise RuntimeError(_BROKEN_ADMISSION)
        return _foreign_caller(scope)

    auth.foreign_caller = _broken_admission

_BROKEN_REFUSAL = os.environ.get("INFERMODES_TEST_BROKEN_REFUSAL", "")

if _BROKEN_REFUSAL:
    from infermodes.errors import InfermodesError
    from infermodes.gateway import auth
    from infermodes.http import Scope, Send

    async def _broken_refuse(scope: Scope, send: Send, exc: InfermodesError) -> None:
        await send({"type": "http.response.start", "status": exc.status_code, "headers": []})
        raise RuntimeError(_BROKEN_REFUSAL)

    auth.refuse = _broken_refuse
