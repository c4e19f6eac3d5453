"""The exact tree evaluator: for every model it accepts, XGBoost's own predictions bit for bit
(the abalone example, 100k hostile rows, every model kind the suite trains or keeps as a
fixture); every model it cannot reproduce exactly keeps XGBoost."""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from prometheus_client import CollectorRegistry

from infermodes.metrics import ServerMetrics
from infermodes.predict import _trees, trees
from infermodes.predict.artifacts import booster_from_bytes, extract_member
from infermodes.predict.model import XGBoostModel
from infermodes.predict.native import NativeBooster
from infermodes.predict.trees import NotExact, TreeEnsemble, compile_booster
from infermodes.predict.ubj import UBJReader
from infermodes.server.batching import Batcher
from tests.conftest import AbaloneModel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
KERNELS = ("scalar", "avx2", "avx512")
LEGACY = sorted(
    path.relative_to(FIXTURES).as_posix()
    for suffix in ("bin", "pkl", "json")
    for path in FIXTURES.glob(f"*/*.{suffix}")
    # gblinear: XGBoost's in-place prediction has none, so the load refuses it (9d1aca9)
    if path.name != "trained.json" and path.stem != "gblinear"
)
RNG = np.random.default_rng(14)


def test_the_extension_was_built_by_the_install() -> None:
    """hatch_build.py builds it; without it every model falls back to XGBoost's ~20 µs call."""
    assert trees.AVAILABLE


def test_every_kernel_the_cpu_has_is_offered() -> None:
    """The SIMD kernels are chosen at run time (no -march at build): on a CPU with AVX2 and
    AVX-512 (the development machine) both run, so the tests below skip neither there."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    needs = {"avx2": {"avx2"}, "avx512": {"avx512f"}}
    simd = (kernel for kernel, flags_needed in needs.items() if flags_needed <= flags)
    assert _trees.KERNELS == ("scalar", *simd)  # noqa: SIM300 - the actual value first


def each_kernel(ensemble: TreeEnsemble) -> list[str]:
    """The kernels the ensemble runs, all of KERNELS where its trees are shallow enough."""
    runs = []
    for kernel in _trees.KERNELS:
        try:
            ensemble.kernel = kernel
        except ValueError:
            continue
        runs.append(kernel)
    return runs


def using(kernel: str) -> None:
    if kernel not in _trees.KERNELS:
        pytest.skip(f"this CPU does not run the {kernel} kernel")


def same_bits(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype == np.float32
    mismatch = np.flatnonzero(ours.view(np.uint32) != np.ascontiguousarray(theirs).view(np.uint32))
    assert mismatch.size == 0, f"{mismatch.size} rows differ, first {mismatch[:5]}"


def hostile_rows(booster: NativeBooster, count: int) -> np.ndarray:
    """Rows at, just below and just above the model's own thresholds, beside NaNs, infinities,
    huge, tiny (subnormal) and negative values, signed zeros and plain noise."""
    document = UBJReader(booster.save_ubj()).document()
    forest = document["learner"]["gradient_booster"]["model"]
    thresholds = np.concatenate(
        [np.asarray(tree["split_conditions"], dtype=np.float32) for tree in forest.get("trees", [])]
        or [np.zeros(1, dtype=np.float32)]
    )
    up, down = np.float32(np.inf), np.float32(-np.inf)
    specials = np.array(
        [np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45, -1e-45, 0.0, -0.0, 1e30, -1e30],
        dtype=np.float32,
    )
    pool = np.concatenate(
        [thresholds, np.nextafter(thresholds, up), np.nextafter(thresholds, down), specials]
    )
    rows = RNG.choice(pool, size=(count, booster.num_features))
    noise = RNG.random(rows.shape) < 0.3
    rows[noise] = (RNG.standard_normal(int(noise.sum())) * 10).astype(np.float32)
    missing = RNG.random(rows.shape) < 0.1
    rows[missing] = np.nan
    rows[: count // 20] = np.nan  # whole rows missing
    return rows


def train(params: dict[str, Any], features: np.ndarray, labels: np.ndarray, **kw: Any) -> bytes:
    dmatrix = xgb.DMatrix(features, labels, **kw)
    booster = xgb.train({"nthread": 1, **params}, dmatrix, 12)
    return bytes(booster.save_raw("ubj"))


@pytest.mark.parametrize("kernel", KERNELS)
def test_abalone_test_rows_and_100k_hostile_rows(abalone_model: AbaloneModel, kernel: str) -> None:
    using(kernel)
    native = NativeBooster(extract_member(abalone_model.tarball.read_bytes()))
    ensemble = TreeEnsemble.of(native)
    assert ensemble.kernel == _trees.KERNELS[-1]  # the widest by default
    ensemble.kernel = kernel
    assert ensemble.kernel == kernel
    same_bits(ensemble.predict(abalone_model.test_rows), native.predict(abalone_model.test_rows))
    rows = hostile_rows(native, 100_000)
    clean = np.where(np.isnan(rows), np.float32(1), rows)  # blocks without a NaN, infinities kept
    # NaN-free blocks, blocks with NaN rows among clean ones, then hostile blocks
    mixed = np.concatenate([clean[:5000], rows[5000:5100], clean[5100:7000], rows])
    same_bits(ensemble.predict(mixed), native.predict(mixed))
    for count in (0, 1, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 79, 1000):  # block and lane edges
        same_bits(ensemble.predict(clean[:count]), native.predict(clean[:count]))
        same_bits(ensemble.predict(rows[:count]), native.predict(rows[:count]))
    same_bits(ensemble.predict(rows.astype(np.float64)[::2]), native.predict(rows[::2]))


def test_the_model_predicts_through_the_evaluator(abalone_model: AbaloneModel) -> None:
    model = XGBoostModel.load(f"file://{abalone_model.tarball}")
    assert model.trees is not None
    rows = abalone_model.test_rows
    same_bits(model.predict(rows), model.booster.predict(rows))


SCORE = np.linspace(0, 1, 400)
EXACT = {
    "squared error with missing values": {"max_depth": 5},
    "absolute error": {"objective": "reg:absoluteerror"},
    "pseudo-Huber": {"objective": "reg:pseudohubererror"},
    "one quantile": {"objective": "reg:quantileerror", "quantile_alpha": 0.3},
    "squared log error": {"objective": "reg:squaredlogerror"},
    "logit raw": {"objective": "binary:logitraw"},
    "binary logistic": {"objective": "binary:logistic"},
    "logistic regression": {"objective": "reg:logistic"},
    "logistic, a base score at the bound": {"objective": "binary:logistic", "base_score": 1e-7},
    "softprob": {"objective": "multi:softprob", "num_class": 3},
    "softmax": {"objective": "multi:softmax", "num_class": 3},
    "softprob forest of five classes": {
        "objective": "multi:softprob",
        "num_class": 5,
        "num_parallel_tree": 2,
        "subsample": 0.8,
    },
    "softprob, one base score for all classes": {
        "objective": "multi:softprob",
        "num_class": 3,
        "base_score": 0.5,
    },
    "logistic, margins past the sigmoid's clamp": {
        "objective": "binary:logistic",
        "base_score": 0.999999,
        "eta": 1.0,
        "max_depth": 8,
        "lambda": 0,
        "min_child_weight": 0,
    },
    "a set base score": {"base_score": 0.123456789},
    "a random forest": {"num_parallel_tree": 4, "subsample": 0.7, "colsample_bynode": 0.7},
    "loss-guided deep trees": {"grow_policy": "lossguide", "max_leaves": 64, "max_depth": 0},
    "exact method, pruned": {"tree_method": "exact", "gamma": 0.05, "max_depth": 8},
    "approx method": {"tree_method": "approx"},
}
FALLBACK = {
    "gamma": {"objective": "reg:gamma"},
    "poisson": {"objective": "count:poisson"},
    "tweedie": {"objective": "reg:tweedie"},
    "dart": {"booster": "dart", "rate_drop": 0.3},
    "gblinear": {"booster": "gblinear"},
    "two quantiles": {"objective": "reg:quantileerror", "quantile_alpha": [0.3, 0.7]},
}


def features_and_labels(objective: str) -> tuple[np.ndarray, np.ndarray]:
    features = RNG.standard_normal((400, 6)).astype(np.float32)
    features[RNG.random(features.shape) < 0.15] = np.nan
    labels: np.ndarray = np.nan_to_num(features[:, 0]) * 2 + np.nan_to_num(features[:, 1]) + 3
    if objective.startswith(("binary:", "reg:logistic")):
        labels = (labels > 3).astype(np.float32)
    elif objective.startswith("multi:"):
        labels = np.digitize(labels, [2, 4]).astype(np.float32)
    elif objective in ("reg:gamma", "count:poisson", "reg:tweedie", "reg:squaredlogerror"):
        labels = np.abs(labels) + 0.1
    return features, labels


@pytest.mark.parametrize("params", EXACT.values(), ids=EXACT.keys())
def test_models_it_accepts_predict_exactly(params: dict[str, Any]) -> None:
    features, labels = features_and_labels(params.get("objective", ""))
    native = NativeBooster(train(params, features, labels))
    ensemble = compile_booster(native)
    assert ensemble is not None
    rows = np.concatenate([features, hostile_rows(native, 20_000)])
    clean = np.nan_to_num(rows[:3000], nan=0.5)
    expected, expected_clean = native.predict(rows), native.predict(clean)
    for kernel in each_kernel(ensemble):
        ensemble.kernel = kernel
        same_bits(ensemble.predict(rows), expected)
        same_bits(ensemble.predict(clean), expected_clean)
        for count in (2, 3, 5, 19, 83):  # rows left over after whole registers, padded
            same_bits(ensemble.predict(rows[:count]), expected[:count])


DEPTHS = {
    # (params, the deepest tree's depth): leaves at every depth (loss-guided growth), single-leaf
    # trees (no split gains enough), and the deepest the SIMD kernels pad
    "single leaves": ({"gamma": 1e9}, 0),
    **{
        f"depth {depth}": (
            {"grow_policy": "lossguide", "max_depth": depth, "max_leaves": 3 * depth, "eta": 1},
            depth,
        )
        for depth in (1, 2, 3, 4, 5, 6, 7, 10)
    },
    # complete trees of 64 leaves: the two words of leaf bits
    "depth 6, complete": ({"max_depth": 6, "eta": 1, "min_child_weight": 0, "lambda": 0}, 6),
    "depth 11": ({"max_depth": 11, "eta": 1, "min_child_weight": 0, "lambda": 0}, 11),
}


def tree_depth(left: np.ndarray) -> int:
    """The longest root-to-leaf walk, in splits (the right child is left + 1)."""
    depth, level = 0, [0]
    while any(left[node] >= 0 for node in level):  # bounded: a tree's levels
        level = [
            child for node in level if left[node] >= 0 for child in (left[node], left[node] + 1)
        ]
        depth += 1
    return depth


@pytest.mark.parametrize(("params", "depth"), DEPTHS.values(), ids=DEPTHS.keys())
def test_every_kernel_at_every_depth_predicts_exactly(params: dict[str, Any], depth: int) -> None:
    """Trees of up to ten levels are padded for the SIMD kernels (a leaf above the last level at
    its rightmost descendant); deeper ones keep the scalar walk."""
    features = RNG.standard_normal((3000, 8)).astype(np.float32)
    features[RNG.random(features.shape) < 0.1] = np.nan
    labels = np.sin(np.nan_to_num(features[:, 0]) * 3) + np.nan_to_num(features[:, 1]) ** 2
    labels += np.nan_to_num(features[:, 2]) * np.nan_to_num(features[:, 3])
    native = NativeBooster(train({"max_bin": 1024, **params}, features, labels))
    document = UBJReader(native.save_ubj()).document()
    grown = document["learner"]["gradient_booster"]["model"]["trees"]
    assert max(tree_depth(np.asarray(tree["left_children"])) for tree in grown) == depth
    ensemble = TreeEnsemble.of(native)
    runs = each_kernel(ensemble)
    assert runs == (["scalar"] if depth > 10 else list(_trees.KERNELS))
    rows = np.concatenate([features, hostile_rows(native, 10_000)])
    clean = np.nan_to_num(rows[:5000], nan=-0.25)
    for kernel in runs:
        ensemble.kernel = kernel
        same_bits(ensemble.predict(rows), native.predict(rows))
        same_bits(ensemble.predict(clean), native.predict(clean))


@pytest.mark.parametrize("params", FALLBACK.values(), ids=FALLBACK.keys())
def test_models_with_a_transform_or_not_trees_fall_back(params: dict[str, Any]) -> None:
    features, labels = features_and_labels(params.get("objective", ""))
    native = NativeBooster(train(params, features, labels))
    with pytest.raises(NotExact):
        TreeEnsemble.of(native)


def test_categorical_splits_fall_back() -> None:
    features = RNG.integers(0, 5, size=(300, 3)).astype(np.float32)
    labels = features[:, 0] * 2 + RNG.random(300)
    model = train(
        {"tree_method": "hist", "max_cat_to_onehot": 1},
        features,
        labels,
        feature_types=["c", "q", "q"],
        enable_categorical=True,
    )
    with pytest.raises(NotExact, match="categorical"):
        TreeEnsemble.of(NativeBooster(model))


@pytest.mark.parametrize("name", LEGACY)
def test_every_legacy_fixture_is_exact_or_falls_back(name: str) -> None:
    native = booster_from_bytes((FIXTURES / name).read_bytes())
    ensemble = compile_booster(native)
    kind = Path(name).stem
    if kind in ("dart", "gamma", "poisson", "hinge", "tweedie", "cox"):
        assert ensemble is None
    exact = ("regression", "missing", "forest", "logitraw", "absolute", "pairwise", "binary")
    if kind in (*exact, "multiclass", "softmax", "logistic_regression"):
        assert ensemble is not None
    if ensemble is not None:
        rows = np.concatenate([np.load(FIXTURES / "rows.npy"), hostile_rows(native, 20_000)])
        expected = native.predict(rows)
        for kernel in each_kernel(ensemble):
            ensemble.kernel = kernel
            same_bits(ensemble.predict(rows), expected)


def test_the_reader_reads_what_xgboost_writes_as_json(abalone_model: AbaloneModel) -> None:
    """UBJ as we read it and XGBoost's JSON of the same model: the same document (floats as
    float32, compared after JSON's decimal round trip)."""
    booster = xgb.Booster(model_file=bytearray(extract_member(abalone_model.tarball.read_bytes())))
    ours = UBJReader(bytes(booster.save_raw("ubj"))).document()
    theirs = json.loads(bytes(booster.save_raw("json")))

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            return [float(np.float32(v)) for v in value.tolist()]
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        if isinstance(value, float):
            return float(np.float32(value))
        return value

    assert plain(ours) == plain(theirs)


@pytest.mark.parametrize("text", ["9.927906E0", "5E-1", "1.0000001", "3.4028235E38", "1E-45"])
def test_base_score_is_the_nearest_float32(text: str) -> None:
    value = trees._nearest_float32(text)
    exact = Fraction(text)
    for towards in (-np.inf, np.inf):
        with np.errstate(over="ignore"):  # beside the largest float32: infinity
            neighbour = float(np.nextafter(value, np.float32(towards)))
        if np.isfinite(neighbour):
            assert abs(Fraction(float(value)) - exact) < abs(Fraction(neighbour) - exact)


def test_a_base_score_halfway_between_two_float32_is_refused() -> None:
    one = np.float32(1)
    halfway = (float(one) + float(np.nextafter(one, np.float32(2)))) / 2
    with pytest.raises(NotExact, match="halfway"):
        trees._nearest_float32(repr(halfway))


BASE = np.zeros(1, dtype=np.float32)


def node_arrays(
    left: list[int], feature: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    count = len(left)
    return (
        np.array(left, dtype=np.int32),
        np.array(feature, dtype=np.int32),
        np.zeros(count, dtype=np.float32),
        np.zeros(count, dtype=np.uint8),
    )


@pytest.mark.parametrize(
    ("left", "feature", "roots"),
    [
        ([1, -1, -1], [0, 0, 0], [0, 0]),  # two trees share a root
        ([1, 0, -1], [0, 0, 0], [0]),  # a child loops back to the root
        ([2, -1, -1], [0, 0, 0], [0]),  # a right child out of range
        ([1, -1, -1], [3, 0, 0], [0]),  # a split on a feature the model does not have
        ([1, -1, -1], [0, 0, 0], [5]),  # a root out of range
    ],
)
def test_the_forest_refuses_what_is_not_a_tree(
    left: list[int], feature: list[int], roots: list[int]
) -> None:
    with pytest.raises(ValueError):
        _trees.Forest(*node_arrays(left, feature), np.array(roots, dtype=np.int32), BASE, 2)


def test_without_the_extension_xgboost_predicts(
    abalone_model: AbaloneModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trees, "_trees", None)
    model = XGBoostModel.load(f"file://{abalone_model.tarball}")
    assert model.trees is None
    rows = abalone_model.test_rows
    same_bits(model.predict(rows), model.booster.predict(rows))


def test_a_forest_whose_init_failed_refuses_to_predict() -> None:
    half = np.full(1, 0.5, dtype=np.float32)
    good = _trees.Forest(*node_arrays([1, -1, -1], [0, 0, 0]), np.zeros(1, np.int32), half, 2)
    out = np.empty(1, dtype=np.float32)
    good.predict(np.zeros((1, 2), dtype=np.float32), out)
    assert out[0] == 0.5  # base margin + a zero leaf
    forest = _trees.Forest.__new__(_trees.Forest)
    with pytest.raises(ValueError):
        _trees.Forest.__init__(
            forest, *node_arrays([1, 0, -1], [0, 0, 0]), np.zeros(1, np.int32), half, 2
        )
    with pytest.raises(ValueError, match="not initialised"):
        forest.predict(np.zeros((1, 2), dtype=np.float32), out)


def test_the_forest_refuses_groups_and_bases_that_do_not_fit() -> None:
    nodes = node_arrays([1, -1, -1], [0, 0, 0])
    root = np.zeros(1, dtype=np.int32)
    with pytest.raises(ValueError):  # a tree of group 2 among two groups
        _trees.Forest(*nodes, root, np.zeros(2, np.float32), 2, 2, np.array([2], np.int32))
    with pytest.raises(ValueError):  # the sigmoid of two groups
        _trees.Forest(*nodes, root, np.zeros(2, np.float32), 2, 1)


def test_models_the_evaluator_predicts_are_batched_only_with_a_window(
    abalone_model: AbaloneModel,
) -> None:
    """Its call costs less than joining a batch: concurrent requests are predicted at once,
    each alone, unless a window asks for batches."""
    model = XGBoostModel.load(f"file://{abalone_model.tarball}")
    assert model.trees is not None and not model.calls_are_shared_cost
    calls: list[int] = []
    predict = model.predict

    def counting(rows: np.ndarray) -> np.ndarray:
        calls.append(rows.shape[0])
        return predict(rows)

    model.predict = counting  # type: ignore[method-assign]
    parts = [abalone_model.test_rows[i : i + 2] for i in range(0, 12, 2)]

    async def together(wait_us: int) -> list[np.ndarray]:
        batcher = Batcher(ServerMetrics(CollectorRegistry()), 12, wait_us, lambda: 16)
        return list(await asyncio.gather(*(batcher.predict(model, part) for part in parts)))

    for got, part in zip(asyncio.run(together(0)), parts, strict=True):
        same_bits(got, model.booster.predict(part))
    assert calls == [2] * 6
    calls.clear()
    asyncio.run(together(1_000_000))
    assert calls == [12]


def test_rows_wider_than_the_feature_block_walk_down_exactly() -> None:
    """The AVX-512 kernel copies rows of up to 64 features into a block by feature; wider rows
    walk down the trees instead, shallow ones too."""
    features = RNG.standard_normal((2000, 70)).astype(np.float32)
    features[RNG.random(features.shape) < 0.1] = np.nan
    labels = np.nan_to_num(features[:, 65]) * 2 + np.nan_to_num(features[:, 3])
    native = NativeBooster(train({"max_depth": 4}, features, labels))
    ensemble = TreeEnsemble.of(native)
    rows = np.concatenate([features, hostile_rows(native, 5_000)])
    clean = np.nan_to_num(rows, nan=0.5)
    for kernel in each_kernel(ensemble):
        ensemble.kernel = kernel
        same_bits(ensemble.predict(rows), native.predict(rows))
        same_bits(ensemble.predict(clean), native.predict(clean))


def random_forest(
    rng: np.random.Generator, depth: int, num_features: int, groups: int
) -> _trees.Forest:
    """Twelve trees of up to ``depth`` levels, leaves at every depth, splits on NaN and on
    infinities among plain conditions, NaNs sent either way: what XGBoost never writes but
    the evaluator must still walk as its scalar code does."""
    conditions = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.25], dtype=np.float32)
    lefts: list[int] = []
    features: list[int] = []
    values: list[np.float32] = []
    defaults: list[int] = []
    roots: list[int] = []
    for _ in range(12):
        roots.append(len(lefts))
        level = [len(lefts)]
        lefts.append(-1)
        features.append(0)
        values.append(np.float32(rng.standard_normal()))
        defaults.append(0)
        for at_depth in range(depth):  # bounded: one level per step
            grown = []
            for node in level:
                if at_depth and rng.random() < 0.2:
                    continue  # stays a leaf
                lefts[node] = len(lefts)
                features[node] = int(rng.integers(num_features))
                pick = rng.random() < 0.3
                values[node] = rng.choice(conditions) if pick else np.float32(rng.standard_normal())
                defaults[node] = int(rng.integers(2))
                for _child in range(2):
                    grown.append(len(lefts))
                    lefts.append(-1)
                    features.append(0)
                    values.append(np.float32(rng.standard_normal()))
                    defaults.append(0)
            level = grown
    return _trees.Forest(
        np.array(lefts, dtype=np.int32),
        np.array(features, dtype=np.int32),
        np.array(values, dtype=np.float32),
        np.array(defaults, dtype=np.uint8),
        np.array(roots, dtype=np.int32),
        rng.standard_normal(groups).astype(np.float32),
        num_features,
        groups=rng.integers(groups, size=12).astype(np.int32),
    )


def test_a_forest_is_initialised_once() -> None:
    """A second __init__ would free arrays that another thread may be predicting from."""
    arrays = (*node_arrays([1, -1, -1], [0, 0, 0]), np.zeros(1, np.int32), BASE, 2)
    forest = _trees.Forest(*arrays)
    with pytest.raises(TypeError, match="initialised once"):
        forest.__init__(*arrays)  # type: ignore[misc]
    out = np.empty(1, np.float32)
    forest.predict(np.zeros((1, 2), np.float32), out)  # still the forest it was


def test_a_forest_whose_padding_would_pass_64_mib_stays_scalar() -> None:
    """4,100 chains of ten splits: 86,100 nodes, but padded to complete trees 8.4 million
    slots (67 MiB); a tenth as many take a SIMD kernel."""

    def chains(count: int) -> _trees.Forest:
        lefts, features = [], []
        for tree in range(count):
            base = tree * 21
            for level in range(10):  # split -> (leaf, next split)
                lefts += [base + 2 * level + 1, -1]
                features += [level, 0]
            lefts.append(-1)
            features.append(0)
        roots = np.arange(count, dtype=np.int32) * 21
        return _trees.Forest(*node_arrays(lefts, features), roots, BASE, 10)

    assert chains(4100).kernel == "scalar"
    assert chains(410).kernel == _trees.KERNELS[-1]


@pytest.mark.parametrize("depth", [0, 1, 3, 5, 6, 8, 10])
@pytest.mark.parametrize("num_features", [3, 70])
def test_every_kernel_walks_odd_trees_as_the_scalar_code_does(
    depth: int, num_features: int
) -> None:
    """The scalar code is XGBoost's walk (the tests above); the SIMD kernels give its bits on
    trees with splits on NaN and infinities, in blocks with and without NaNs."""
    rng = np.random.default_rng(depth * 100 + num_features)
    forest = random_forest(rng, depth, num_features, groups=3)
    pool = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.25, 3e38], dtype=np.float32)
    rows = rng.standard_normal((3000, num_features)).astype(np.float32)
    special = rng.random(rows.shape) < 0.2
    rows[special] = rng.choice(pool, size=int(special.sum()))
    rows[:1000] = np.nan_to_num(rows[:1000], nan=0.25)  # blocks without a NaN
    expected = np.empty((rows.shape[0], 3), dtype=np.float32)
    forest.kernel = "scalar"
    forest.predict(rows, expected)
    for kernel in _trees.KERNELS[1:]:
        forest.kernel = kernel
        for count in (rows.shape[0], 1000, 77, 5):
            got = np.empty((count, 3), dtype=np.float32)
            forest.predict(rows[:count], got)
            same_bits(got, expected[:count])
