"""Fault injection for tests of real ``infermodes`` processes: a test puts this folder on the
child's PYTHONPATH and sets ``INFERMODES_TEST_FAILING_PREDICTS=N``; the first N predictions
of the process then raise, as a transient failure would. ``INFERMODES_TEST_BROKEN_GATEWAY=TEXT``
makes a gateway's endpoint lookups and its ``/metrics`` raise an unexpected error whose message is
TEXT, as a bug would. Nothing happens without the variables.
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
