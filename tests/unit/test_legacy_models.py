"""Models old XGBoost wrote (legacy binary files and pickled boosters) load without old XGBoost
and without running the pickle, and predict what the old XGBoost predicted.

The fixtures are real: ``tests/fixtures/legacy/make_fixtures.py`` trained them with XGBoost
0.90 ... 1.7.6 wheels from PyPI and recorded each version's own predictions. Synthetic files
(``legacy_model`` below) check the refusals, one defect at a time.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infermodes.errors import ModelLoadError
from infermodes.predict.artifacts import ModelFormat, booster_from_bytes, sniff_format
from infermodes.predict.legacy import legacy_to_json
from infermodes.predict.safe_pickle import PickleRefused, booster_model_from_pickle

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
VERSIONS = ("0.90", "1.0.2", "1.2.1", "1.3.3", "1.5.2", "1.7.6")
CORE = ("regression", "binary", "multiclass", "dart", "missing")
ROWS = np.load(FIXTURES / "rows.npy")
# XGBoost 3's in-place prediction (what the server uses) has no gblinear: checked separately
SERVED = sorted(
    path.relative_to(FIXTURES).as_posix()
    for suffix in ("bin", "pkl", "json")
    for path in FIXTURES.glob(f"*/*.{suffix}")
    if path.stem != "gblinear" and path.name != "trained.json"
)


def expected(name: str) -> np.ndarray:
    return np.load(FIXTURES / (name.rsplit(".", 1)[0] + ".npy"))


def test_every_version_has_every_core_model_as_binary_and_pickle() -> None:
    for version in VERSIONS:
        for kind in CORE:
            assert f"{version}/{kind}.bin" in SERVED
            assert f"{version}/{kind}.pkl" in SERVED
    assert len(SERVED) == 141  # plus the other objectives: softmax, poisson, rank, forest, ...


@pytest.mark.parametrize("name", SERVED)
def test_old_models_predict_what_the_old_xgboost_predicted(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    if name.endswith(".pkl"):
        assert sniff_format(data) is ModelFormat.PICKLE
    booster = booster_from_bytes(data)  # never with allow_pickle
    assert booster.num_features == ROWS.shape[1]
    want = expected(name)
    got = booster.predict(ROWS).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("version", VERSIONS)
def test_gblinear_translates_to_the_same_predictions(version: str) -> None:
    """Through the xgboost package's DMatrix prediction, which has gblinear."""
    booster = xgb.Booster()
    booster.load_model(
        bytearray(legacy_to_json((FIXTURES / version / "gblinear.bin").read_bytes()))
    )
    got = booster.predict(xgb.DMatrix(ROWS, missing=np.nan))
    np.testing.assert_allclose(got, expected(f"{version}/gblinear.bin"), rtol=1e-5, atol=1e-6)


def float32_everywhere(value: object) -> object:
    if isinstance(value, dict):
        return {key: float32_everywhere(item) for key, item in value.items()}
    if isinstance(value, list):
        return [float32_everywhere(item) for item in value]
    return float(np.float32(value)) if isinstance(value, float) else value


@pytest.mark.parametrize("kind", CORE)
def test_translation_equals_the_json_xgboost_17_wrote_itself(kind: str) -> None:
    ours = json.loads(legacy_to_json((FIXTURES / "1.7.6" / f"{kind}.bin").read_bytes()))
    theirs = json.loads((FIXTURES / "1.7.6" / f"{kind}.json").read_text())
    for model in (ours, theirs):  # "0.5" and "5E-1"
        param = model["learner"]["learner_model_param"]
        param["base_score"] = float(param["base_score"])
    assert float32_everywhere(ours) == float32_everywhere(theirs)


def test_the_binf_header_is_optional() -> None:
    data = (FIXTURES / "1.7.6" / "multiclass.bin").read_bytes()
    assert data.startswith(b"binf")
    assert legacy_to_json(data[4:]) == legacy_to_json(data)


def test_pruned_trees_keep_their_deleted_nodes() -> None:
    model = json.loads(legacy_to_json((FIXTURES / "0.90" / "regression.bin").read_bytes()))
    trees = model["learner"]["gradient_booster"]["model"]["trees"]
    assert [tree["tree_param"]["num_deleted"] for tree in trees] == ["0", "2"]


# -- synthetic legacy files ------------------------------------------------------------------

STUMP = [  # parent, left, right, split (bit 31: missing goes left), value
    (-1, 1, 2, 0 | 1 << 31, 0.5),
    (0 | 1 << 31, -1, -1, 0, -1.0),
    (0, -1, -1, 0, 1.0),
]


def text(value: bytes) -> bytes:
    return struct.pack("<Q", len(value)) + value


def tree(nodes: list[tuple[int, int, int, int, float]], deleted: int = 0, leaf_vector: int = 0):
    param = struct.pack("<iiiiii", 1, len(nodes), deleted, 0, 2, leaf_vector).ljust(148, b"\0")
    packed = b"".join(
        struct.pack("<IiiIf", parent & 0xFFFFFFFF, left, right, split, value)
        for parent, left, right, split, value in nodes
    )
    return param + packed + b"\0" * 16 * len(nodes)


def legacy_model(
    *,
    objective: bytes = b"reg:squarederror",
    booster: bytes = b"gbtree",
    base_score: float = 0.5,
    num_feature: int = 2,
    num_class: int = 0,
    version: tuple[int, int] = (1, 7),
    trees: list[bytes] | None = None,
    tree_info: list[int] | None = None,
    body: bytes | None = None,
    attributes: dict[bytes, bytes] | None = None,
) -> bytes:
    """A legacy binary model as XGBoost 1.x lays it out (see infermodes/predict/legacy.py)."""
    trees = [tree(STUMP)] if trees is None else trees
    tree_info = [0] * len(trees) if tree_info is None else tree_info
    learner = struct.pack(
        "<fIiiiIIIi", base_score, num_feature, num_class, attributes is not None, 0, *version, 1, 0
    ).ljust(136, b"\0")
    if body is None:
        gbtree = struct.pack("<ii", len(trees), 1).ljust(160, b"\0")
        body = gbtree + b"".join(trees) + struct.pack(f"<{len(tree_info)}i", *tree_info)
    tail = b""
    if attributes is not None:
        tail = struct.pack("<Q", len(attributes))
        tail += b"".join(text(key) + text(value) for key, value in attributes.items())
    return b"binf" + learner + text(objective) + text(booster) + body + tail


MISSING_LEFT_AND_RIGHT = np.array([[0.2, 0], [0.8, 0], [np.nan, 0]], dtype=np.float32)


def test_a_stump_predicts_its_leaves_plus_base_score() -> None:
    booster = booster_from_bytes(legacy_model())
    np.testing.assert_array_equal(booster.predict(MISSING_LEFT_AND_RIGHT), [-0.5, 1.5, -0.5])


@pytest.mark.parametrize(
    ("objective", "stored", "margin"),
    [
        (b"binary:logistic", 0.0, 0.0),  # 0.5 through the logit
        (b"count:poisson", float(np.log(2.0)), float(np.log(2.0))),
        (b"binary:logitraw", 0.25, 0.25),
        (b"reg:linear", 0.5, 0.5),  # XGBoost 3's reg:squarederror
    ],
)
def test_before_1_0_base_score_is_stored_as_a_margin(
    objective: bytes, stored: float, margin: float
) -> None:
    data = legacy_model(objective=objective, base_score=stored, version=(0, 0))
    config = json.loads(legacy_to_json(data))["learner"]
    assert config["objective"]["name"] != "reg:linear"
    booster = booster_from_bytes(data)
    raw = booster.predict(np.array([[0.2, 0]], dtype=np.float32))[0]
    link = {b"binary:logistic": lambda m: 1 / (1 + np.exp(-m)), b"count:poisson": np.exp}
    np.testing.assert_allclose(raw, link.get(objective, lambda m: m)(margin - 1.0), rtol=1e-6)


def test_xgboost_1_0_to_1_2_logitraw_base_score_went_through_the_logit() -> None:
    for version, margin in (((1, 2), 0.0), ((1, 3), 0.5)):
        data = legacy_model(objective=b"binary:logitraw", version=version)
        got = booster_from_bytes(data).predict(np.array([[0.8, 0]], dtype=np.float32))
        np.testing.assert_allclose(got, [margin + 1.0], atol=1e-6)


def test_attributes_are_kept_and_the_saved_objective_is_used() -> None:
    objective = json.dumps(
        {"name": "reg:pseudohubererror", "pseudo_huber_param": {"huber_slope": "2"}}
    )
    data = legacy_model(
        objective=b"reg:pseudohubererror",
        attributes={b"best_iteration": b"0", b"objective": objective.encode(), b"metrics": b"mae;"},
    )
    learner = json.loads(legacy_to_json(data))["learner"]
    assert learner["attributes"] == {"best_iteration": "0"}
    assert learner["objective"]["pseudo_huber_param"] == {"huber_slope": "2"}


def dart(weights: list[float]) -> bytes:
    gbtree = struct.pack("<ii", 1, 1).ljust(160, b"\0") + tree(STUMP) + struct.pack("<i", 0)
    return gbtree + struct.pack(f"<Q{len(weights)}f", len(weights), *weights)


def test_dart_tree_weights_scale_the_leaves() -> None:
    booster = booster_from_bytes(legacy_model(booster=b"dart", body=dart([0.5])))
    np.testing.assert_array_equal(booster.predict(MISSING_LEFT_AND_RIGHT), [0.0, 1.0, 0.0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"garbage", "truncated at byte 0: reading the learner parameters needs 136 bytes"),
        (legacy_model(num_feature=0), "learner parameters are out of range"),
        (legacy_model(objective=b"\x01\x02"), "the objective name is not a name"),
        (legacy_model(booster=b"gbforest"), "unknown booster 'gbforest'"),
        (legacy_model(body=struct.pack("<ii", 1, 1).ljust(160, b"\0")), "parameters of tree 0"),
        (legacy_model(trees=[tree(STUMP, leaf_vector=2)]), "size_leaf_vector=2"),
        (legacy_model(trees=[tree([(-1, 1, 7, 0, 0.5), *STUMP[1:]])]), "outside 0..2"),
        (legacy_model(trees=[tree([STUMP[0], (5, -1, -1, 0, 0.0), STUMP[2]])]), "outside 0..2"),
        (legacy_model(trees=[tree([STUMP[0], STUMP[1], (1, -1, -1, 0, 1.0)])]), "not form a tree"),
        (legacy_model(trees=[tree([(-1, 1, 2, 9, 0.5), *STUMP[1:]])]), "feature outside 0..1"),
        (legacy_model(trees=[tree(STUMP, deleted=1)]), "says 1 deleted nodes, has 0"),
        (legacy_model(tree_info=[2]), "output groups outside 0..0"),
        (legacy_model(num_class=3), "1 trees, not whole rounds of 1 parallel trees for 3"),
        (legacy_model(booster=b"dart", body=dart([1.0, 1.0])), "2 tree weights for 1 trees"),
        (
            legacy_model(booster=b"gblinear", body=b"\0" * 136 + struct.pack("<Qf", 1, 0.0)),
            "has 1 weights, expected 3",
        ),
        (legacy_model(attributes={b"objective": b"{nope"}), "objective is not JSON"),
        (legacy_model(objective=b"reg:nonsense"), "Unknown objective function"),
        (legacy_model()[:140] + struct.pack("<Q", 2**40), "impossible length"),
    ],
)
def test_defective_files_are_refused_naming_the_defect(data: bytes, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        booster_from_bytes(data)


def test_every_truncation_is_named() -> None:
    data = (FIXTURES / "1.7.6" / "dart.bin").read_bytes()
    for end in range(len(data)):
        with pytest.raises(ModelLoadError, match="truncated"):
            legacy_to_json(data[:end])


def test_a_corrupt_feature_count_is_refused_not_allocated() -> None:
    """One flipped byte of num_feature (found by the test below) declared 3.2e9 features."""
    data = bytearray((FIXTURES / "0.90" / "multiclass.bin").read_bytes())
    data[7] = 191
    with pytest.raises(ModelLoadError, match=r"declares \d+ features; .* at most 16777216"):
        booster_from_bytes(bytes(data))


def test_a_model_that_loads_but_cannot_predict_is_refused_at_load() -> None:
    """One zeroed byte (found by the test below) left XGBoost a model whose every prediction
    failed its own check (``iteration_indptr`` empty): a server would have answered 500s."""
    data = bytearray((FIXTURES / "0.90" / "multiclass.bin").read_bytes())
    data[172] = 0
    with pytest.raises(ModelLoadError, match="loads but cannot predict"):
        booster_from_bytes(bytes(data))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_bytes_load_or_are_refused(edits: list[tuple[int, int]]) -> None:
    """Never another exception, never a crash: and what loads, predicts."""
    data = bytearray((FIXTURES / "0.90" / "multiclass.bin").read_bytes())
    for position, value in edits:
        data[position % len(data)] = value
    try:
        booster = booster_from_bytes(bytes(data))
    except ModelLoadError:
        return
    booster.predict(np.zeros((2, booster.num_features), dtype=np.float32))


# -- pickles ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    features = np.random.default_rng(0).random((50, 3), dtype=np.float32)
    return xgb.train({"max_depth": 2, "nthread": 1}, xgb.DMatrix(features, features.sum(1)), 3)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_todays_booster_pickles_load_without_the_opt_in(
    booster: xgb.Booster, protocol: int
) -> None:
    loaded = booster_from_bytes(pickle.dumps(booster, protocol=protocol))
    np.testing.assert_array_equal(loaded.predict(ROWS[:, :3]), booster.inplace_predict(ROWS[:, :3]))


def booster_pickle(state: object, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    """A pickle shaped like a Booster's (its class, then ``state``): what anyone can write."""
    shell = xgb.core.Booster.__new__(xgb.core.Booster)

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj: object) -> object:
            if obj is shell:
                return (copyreg.__newobj__, (xgb.core.Booster,), state)
            return NotImplemented

    buffer = io.BytesIO()
    Pickler(buffer, protocol).dump(shell)
    return buffer.getvalue()


class RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (self.command,))


@pytest.mark.parametrize("hide", [False, True], ids=["bare", "inside-a-booster-state"])
def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, hide: bool) -> None:
    marker = tmp_path / "payload-ran"
    payload = RunsCommand(f"touch {marker}")
    data = booster_pickle({"handle": payload}) if hide else pickle.dumps(payload)
    with pytest.raises(ModelLoadError, match="refused") as refused:
        booster_from_bytes(data)
    assert "posix.system" in str(refused.value)
    assert not marker.exists()
    with contextlib.suppress(TypeError):  # Booster.__setstate__ gets the command's exit code
        pickle.loads(data)  # the payload is real: unpickling runs it
    assert marker.exists()


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"handle": None}, "holds no model bytes under 'handle'"),
        ({"feature_names": ["a"]}, "holds no model bytes under 'handle'"),
        ({"handle": b"CONFIG-offset:" + struct.pack("<q", 99) + b"x"}, "has 99 bytes; 1 follow"),
        ({"handle": b'{"Config": {}, "Model": [1]}'}, "JSON holds no model"),
        ({"handle": b'{"Model": {'}, "JSON is malformed"),
        ({"handle": b"{L\x00\x00\x00\x00\x00\x00\x00\x05Model{"}, "UBJ is truncated"),
    ],
)
def test_booster_pickles_without_a_model_are_refused(state: dict, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        booster_model_from_pickle(booster_pickle(state))


def test_bytearray_and_bytes_are_rebuilt_only_from_bytes() -> None:
    class HugeBuffer:
        def __reduce__(self) -> tuple[object, ...]:
            return (bytearray, (2**40,))

    with pytest.raises(PickleRefused, match="bytearray with arguments"):
        booster_model_from_pickle(booster_pickle({"handle": HugeBuffer()}))
    model = (FIXTURES / "0.90" / "regression.bin").read_bytes()
    as_bytes = booster_pickle({"handle": model}, protocol=2)  # via _codecs.encode
    assert booster_model_from_pickle(as_bytes) == model


def test_a_pickle_cannot_change_the_functions_it_may_call() -> None:
    build_on_bytearray = b"\x80\x04\x8c\x08builtins\x8c\x09bytearray\x93}b."  # BUILD {} on it
    with pytest.raises(PickleRefused, match="sets state on bytearray"):
        booster_model_from_pickle(build_on_bytearray)


def test_a_pickle_of_something_else_is_refused_by_default() -> None:
    with pytest.raises(
        ModelLoadError, match="holds a dict, not an XGBoost Booster.*--allow-pickle"
    ):
        booster_from_bytes(pickle.dumps({"handle": b"x"}))


def test_a_broken_pickle_is_named() -> None:
    data = (FIXTURES / "1.7.6" / "binary.pkl").read_bytes()
    with pytest.raises(ModelLoadError, match="cannot read the pickle"):
        booster_model_from_pickle(data[: len(data) // 2])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["1.0.2/regression.pkl", "1.3.3/binary.pkl", "1.7.6/multiclass.pkl"]),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_corrupted_pickles_are_read_or_refused(name: str, edits: list[tuple[int, int]]) -> None:
    """The pickle layer only: a JSON or UBJ model it returns is XGBoost's to check (and XGBoost 3
    does not check tree links in them); 1.0's legacy binary inside is checked above."""
    data = bytearray((FIXTURES / name).read_bytes())
    for position, value in edits:
        data[position % len(data)] = value
    with contextlib.suppress(ModelLoadError):
        assert booster_model_from_pickle(bytes(data))


@pytest.mark.parametrize(
    "secret",
    [
        b"root:$6$saltsalt$hashhashhashhash:19000:0:99999:7:::\n" * 4,
        bytes(range(256)) * 2,  # any byte values
        b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n" * 4,
    ],
)
def test_a_file_that_is_no_model_is_refused_quoting_none_of_its_bytes(secret: bytes) -> None:
    """A model URI may name any file the server can read; the error reaches the status."""
    with pytest.raises(ModelLoadError) as refused:
        booster_from_bytes(secret)
    told = str(refused.value)
    numbers = {str(n) for n in struct.unpack_from("<IiiiiII", secret, 4)}
    assert not any(number in told for number in numbers if len(number) > 2), told
    assert "root" not in told and "BEGIN" not in told and "hash" not in told, told
