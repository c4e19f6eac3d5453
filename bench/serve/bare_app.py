"""The floor for an HTTP model server: a bare FastAPI route around ``inplace_predict``.

No validation, no metrics, no content negotiation: whatever infermodes costs above this is the
price of its features. Run with ``uvicorn --factory bench.serve.bare_app:create_app`` and the
model file in ``BENCH_MODEL``.
"""

from __future__ import annotations

import os

import numpy as np
import xgboost as xgb
from fastapi import FastAPI, Request, Response


def create_app() -> FastAPI:
    """Load the model once and serve it; one OpenMP thread, as one-row requests want."""
    booster = xgb.Booster(model_file=os.environ["BENCH_MODEL"])
    booster.set_param({"nthread": 1})
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> Response:
        return Response(status_code=200)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        row = np.array((await request.body()).split(b","), dtype=np.float32).reshape(1, -1)
        return Response(f"{booster.inplace_predict(row)[0]}\n", media_type="text/csv")

    return app
