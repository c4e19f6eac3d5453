"""The app in-process: readiness before and after the model arrives, and error mapping."""

import numpy as np
import pytest
import xgboost as xgb
from fastapi.testclient import TestClient

from infermodes.errors import ModelLoadError
from infermodes.predict.model import XGBoostModel
from infermodes.predict.native import NativeBooster
from infermodes.predict.trees import compile_booster
from infermodes.server.app import ModelSlot, create_app
from infermodes.settings import ServeSettings


@pytest.fixture
def model() -> XGBoostModel:
    features = np.random.default_rng(1).random((20, 3), dtype=np.float32)
    booster = xgb.train({"nthread": 1}, xgb.DMatrix(features, features.sum(axis=1)), 3)
    native = NativeBooster(bytes(booster.save_raw("ubj")))
    return XGBoostModel(native, native.num_features)


def test_ping_is_503_until_the_model_is_loaded(model: XGBoostModel) -> None:
    slot = ModelSlot()
    client = TestClient(create_app(ServeSettings(model_uri="unused"), slot))
    assert client.get("/ping").status_code == 503
    response = client.post("/invocations", content=b"1,2,3", headers={"content-type": "text/csv"})
    assert response.status_code == 503
    assert response.json()["message"] == "model is loading"
    slot.model = model
    assert client.get("/ping").status_code == 200
    response = client.post("/invocations", content=b"1,2,3", headers={"content-type": "text/csv"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("error", "reported"),
    [
        (ModelLoadError("no such object: file:///absent"), "no such object: file:///absent"),
        # only our own errors were caught: a MemoryError ended the loader thread silently and
        # /ping said "model is loading" for ever, and the worker never exited
        (MemoryError("cannot allocate 40 GB"),
         "unexpected error while loading the model (MemoryError: cannot allocate 40 GB)"),
    ],
)  # fmt: skip
def test_a_load_failure_is_reported_by_ping_and_ends_the_worker(
    error: Exception, reported: str
) -> None:
    slot = ModelSlot()
    failures: list[str] = []

    def load() -> XGBoostModel:
        raise error

    slot.load_in_background(load, failures.append).join(5)
    client = TestClient(create_app(ServeSettings(model_uri="unused"), slot))
    response = client.get("/ping")
    assert response.status_code == 503
    assert failures == [reported]  # on_failure: the worker stops
    assert response.json()["message"] == reported


def test_chunked_body_over_limit_is_413(model: XGBoostModel) -> None:
    slot = ModelSlot()
    slot.model = model
    client = TestClient(create_app(ServeSettings(model_uri="unused", max_payload_bytes=10), slot))

    def chunks():  # no Content-Length: the limit must hold while streaming
        yield b"1,2,3\n" * 3

    response = client.post("/invocations", content=chunks(), headers={"content-type": "text/csv"})
    assert response.status_code == 413


def test_get_on_invocations_is_405_and_unknown_routes_404(model: XGBoostModel) -> None:
    slot = ModelSlot()
    slot.model = model
    client = TestClient(create_app(ServeSettings(model_uri="unused"), slot))
    response = client.get("/invocations")
    assert response.status_code == 405
    assert response.json()["error"] == "MethodNotAllowed"
    assert client.get("/nope").status_code == 404


def test_every_route_speaks_the_error_shape_and_publishes_no_schema(model: XGBoostModel) -> None:
    slot = ModelSlot()
    slot.model = model
    client = TestClient(create_app(ServeSettings(model_uri="unused"), slot))
    assert client.head("/ping").status_code == 200
    for method, path, status in [
        ("GET", "/nope", 404),
        ("GET", "/openapi.json", 404),
        ("GET", "/docs", 404),
        ("POST", "/ping", 405),
        ("POST", "/metrics", 405),
        ("PUT", "/invocations", 405),
    ]:
        response = client.request(method, path)
        assert response.status_code == status
        assert set(response.json()) == {"error", "message"}
        assert "allow" in response.headers or status == 404


def test_a_bug_is_a_500_in_the_error_shape_with_the_traceback_logged(
    model: XGBoostModel, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        num_features = model.num_features
        calls_are_shared_cost = False

        def predict(self, rows: object) -> object:
            raise RuntimeError("a bug")

    slot = ModelSlot()
    slot.model = Broken()  # type: ignore[assignment]
    client = TestClient(create_app(ServeSettings(model_uri="unused"), slot))
    response = client.post("/invocations", content=b"1,2,3", headers={"content-type": "text/csv"})
    assert response.status_code == 500
    assert response.json()["error"] == "InternalServerError"
    assert "RuntimeError: a bug" in caplog.text


def test_rows_over_the_limit_are_413(model: XGBoostModel) -> None:
    slot = ModelSlot()
    slot.model = model
    client = TestClient(create_app(ServeSettings(model_uri="unused", max_rows=2), slot))
    headers = {"content-type": "text/csv"}
    assert client.post("/invocations", content=b"1,2,3\n" * 2, headers=headers).status_code == 200
    response = client.post("/invocations", content=b"1,2,3\n" * 3, headers=headers)
    assert response.status_code == 413
    assert "at most 2" in response.json()["message"]


def test_the_fast_path_judges_a_body_by_its_rows_not_its_size(model: XGBoostModel) -> None:
    """A one-row JSON body padded to 30 KB is answered at once while rows cost 20 µs (counted
    by its bytes, 15,000 rows at most, it went the ASGI way); one whose rows would keep the
    loop past ``loop_predict_seconds`` is left to the ASGI path, which predicts it off the
    loop."""
    trees = compile_booster(model.booster)
    assert trees is not None  # the tree evaluator: calls too cheap to share, predicted alone
    slot = ModelSlot()
    slot.model = XGBoostModel(model.booster, model.num_features, trees=trees)
    handler = create_app(ServeSettings(model_uri="unused"), slot).invocations
    scope = {"type": "http", "method": "POST", "path": "/invocations",
             "headers": [(b"content-type", b"application/json")]}  # fmt: skip
    body = b'{"instances": [[1, 2, 3]]}' + b" " * 30_000
    handler.batcher.seconds_per_row = 20e-6
    answer = handler.answer_now(scope, body)
    assert answer is not None and answer[0] == 200
    handler.batcher.seconds_per_row = 1.0
    assert handler.answer_now(scope, body) is None
