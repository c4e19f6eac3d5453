"""Shared inputs of the async unit tests: a queue message and a tiny real model."""

import numpy as np
import xgboost as xgb

from infermodes.predict.model import XGBoostModel
from infermodes.predict.native import NativeBooster
from infermodes.queueing.messages import InvocationRequest


def invocation(**overrides: object) -> InvocationRequest:
    fields = {
        "inference_id": "abc-1",
        "endpoint": "ep",
        "input_location": "s3://b/in/abc-1.in",
        "output_location": "s3://b/out/abc-1.out",
        "failure_location": "s3://b/fail/abc-1.error",
        "content_type": "text/csv",
        "accept": "text/csv",
        "accepted_at": 100.0,
        "expires_at": 160.0,
        "invocation_timeout_seconds": 900,
    } | overrides
    return InvocationRequest(**fields)  # type: ignore[arg-type]


def tiny_model(seed: int) -> XGBoostModel:
    """Three features, trained in milliseconds."""
    features = np.random.default_rng(seed).random((30, 3), dtype=np.float32)
    booster = xgb.train({"nthread": 1}, xgb.DMatrix(features, features.sum(axis=1)), 3)
    native = NativeBooster(bytes(booster.save_raw("ubj")))
    return XGBoostModel(native, native.num_features)
