"""The direct C-API path must predict exactly what xgboost's own inplace_predict does."""

import numpy as np
import pytest
import xgboost as xgb

from infermodes.errors import ModelLoadError
from infermodes.predict.native import NativeBooster, library_version

RNG = np.random.default_rng(7)


def train(params: dict, labels: np.ndarray, features: np.ndarray) -> xgb.Booster:
    return xgb.train({"nthread": 1, **params}, xgb.DMatrix(features, labels), 8)


@pytest.mark.parametrize("fmt", ["json", "ubj"])
def test_regression_with_missing_values(fmt: str) -> None:
    features = RNG.random((200, 6), dtype=np.float32)
    features[RNG.random(features.shape) < 0.1] = np.nan
    booster = train({"max_depth": 4}, RNG.random(200), features)
    native = NativeBooster(bytes(booster.save_raw(fmt)))
    assert native.num_features == 6
    np.testing.assert_array_equal(native.predict(features), booster.inplace_predict(features))


def test_multiclass_output_shape() -> None:
    features = RNG.random((90, 4), dtype=np.float32)
    labels = RNG.integers(0, 3, 90)
    booster = train({"objective": "multi:softprob", "num_class": 3}, labels, features)
    native = NativeBooster(bytes(booster.save_raw("ubj")))
    predictions = native.predict(features)
    assert predictions.shape == (90, 3)
    np.testing.assert_array_equal(predictions, booster.inplace_predict(features))


def test_non_contiguous_and_float64_input() -> None:
    features = RNG.random((30, 8))
    booster = train({}, RNG.random(30), features)
    native = NativeBooster(bytes(booster.save_raw("ubj")))
    view = features[:, ::2]  # not C-contiguous
    padded = np.zeros((30, 4))
    padded[:] = view
    expected = booster.inplace_predict(np.hstack([padded, np.zeros((30, 4))]))
    np.testing.assert_allclose(
        native.predict(np.hstack([view, np.zeros((30, 4))])), expected, rtol=1e-6
    )


def test_results_are_copied_not_aliased() -> None:
    features = RNG.random((10, 3), dtype=np.float32)
    booster = train({}, RNG.random(10), features)
    native = NativeBooster(bytes(booster.save_raw("ubj")))
    first = native.predict(features[:5])
    snapshot = first.copy()
    native.predict(features[5:])
    np.testing.assert_array_equal(first, snapshot)


def test_garbage_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError):
        NativeBooster(b'{"not": "a model"}')


def test_version_matches_the_package() -> None:
    assert library_version() == xgb.__version__.split("+")[0].split("rc")[0]


def test_concurrent_threads_each_get_their_own_answers() -> None:
    """The proxy matrix is per thread: concurrent predictions never see each other's rows."""
    import concurrent.futures

    features = RNG.random((400, 5), dtype=np.float32)
    booster = train({"max_depth": 3}, RNG.random(400), features)
    native = NativeBooster(bytes(booster.save_raw("ubj")))
    expected = booster.inplace_predict(features)

    def one(index: int) -> float:
        return float(native.predict(features[index : index + 1])[0])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(400)))
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), expected)
