"""The XGBoost model: load once, predict many times. Nothing else lives here."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from infermodes.errors import InvalidInput
from infermodes.predict.artifacts import load_booster
from infermodes.predict.native import NativeBooster
from infermodes.predict.outputs import OutputSelection
from infermodes.predict.trees import TreeEnsemble, compile_booster
from infermodes.storage import Storage


@dataclass
class XGBoostModel:
    """A loaded booster and its feature count, checked on every request; ``outputs`` is the
    selection of the container's output keys (None: one score per row). ``trees`` is the exact
    tree evaluator of the booster when there is one (``predict.trees``): the same predictions,
    bit for bit, without XGBoost's ~20 µs per call."""

    booster: NativeBooster
    num_features: int
    load_seconds: float = 0.0
    outputs: OutputSelection | None = None
    trees: TreeEnsemble | None = None

    @classmethod
    def load(
        cls,
        uri: str,
        storage: Storage | None = None,
        allow_pickle: bool = False,
        threads: int = 1,
        inference_output: str | None = None,
    ) -> XGBoostModel:
        """``threads`` is XGBoost's nthread for the models it predicts (the tree evaluator, one
        thread, takes the others): 1 for small online requests (more threads per worker
        oversubscribe the cores and collapse throughput), more for batch.
        ``inference_output`` (``SAGEMAKER_INFERENCE_OUTPUT``'s keys) is checked against the
        model's objective here, so that a wrong key stops the server at start."""
        started = time.perf_counter()
        booster = load_booster(uri, storage or Storage(), allow_pickle=allow_pickle)
        booster.set_threads(threads)
        outputs = (
            OutputSelection.for_model(inference_output, booster.objective, booster.num_class)
            if inference_output is not None
            else None
        )
        trees = compile_booster(booster)
        seconds = time.perf_counter() - started
        return cls(booster, booster.num_features, seconds, outputs, trees)

    @property
    def calls_are_shared_cost(self) -> bool:
        """Whether predicting concurrent requests in one call saves time: XGBoost's call costs
        ~20 µs whatever the rows; the tree evaluator's ~1 µs, less than joining a batch costs
        (a future and one more event-loop step per request)."""
        return self.trees is None

    def predict(self, rows: np.ndarray) -> np.ndarray:
        if rows.ndim != 2 or rows.shape[1] != self.num_features:
            got = rows.shape[1] if rows.ndim == 2 else rows.size
            raise InvalidInput(f"expected {self.num_features} features, got {got}")
        trees = self.trees
        if trees is not None:  # one thread of it outruns XGBoost's threads (bench/serve/README)
            return trees.predict(rows)
        return self.booster.predict(rows)
