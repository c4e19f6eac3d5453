"""XGBoost's legacy binary model format, read in pure Python and rewritten as its JSON model.

XGBoost 0.x and 1.x wrote it (``save_model`` to any file not named ``.json``, ``save_raw()``,
and inside the pickles of 0.90 and 1.0); XGBoost 3 cannot read it any more, so old artifacts are
translated here into the JSON schema XGBoost 1.7 writes, which the installed library loads.
The layout (all little-endian, as dmlc streams store it), after an optional ``binf`` header:

1. ``LearnerModelParamLegacy`` (136 bytes): base_score f32, num_feature u32, num_class i32,
   contain_extra_attrs i32, contain_eval_metrics i32, major/minor version u32 (0 before 1.0),
   num_target u32 and boost_from_average i32 (1.7; reserved zeros before), reserved.
2. The objective's and the booster's names: u64 length + bytes each.
3. gbtree and dart: ``GBTreeModelParam`` (160 bytes: num_trees i32, num_parallel_tree i32 or 1),
   then each tree: ``TreeParam`` (148 bytes: num_nodes, num_deleted, num_feature at 4, 8, 16),
   its nodes (20 bytes: parent, left, right i32, split index u32 with the default-left flag in
   bit 31, split condition or leaf value f32) and their statistics (16 bytes: loss_chg,
   sum_hess, base_weight f32, leaf_child_cnt i32); then tree_info (i32 per tree: its output
   group), and for dart the tree weights (u64 count + f32 each).
   gblinear: ``GBLinearModelParam`` (136 bytes), then its weights (u64 count + f32 each).
4. If contain_extra_attrs: the attributes (u64 count, then key and value strings). Since 1.0 the
   objective's configuration is the attribute ``objective`` (JSON).

What follows (0.x eval metric names) does not affect predictions and is ignored, as XGBoost did.

Until the first fields read as a model's, an error quotes nothing read from the file: a model
URI may name any file the server can read (a key, a password file), and the error reaches the
endpoint's status.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from infermodes.errors import ModelLoadError

# the JSON layout written below is XGBoost 1.7's; 3.x loads it without a compatibility warning
JSON_SCHEMA_VERSION = [1, 7, 6]
_HEADER = b"binf"
_LEARNER_PARAM = struct.Struct("<fIiiiIIIi")  # followed by reserved space up to 136 bytes
_LEARNER_PARAM_SIZE = 136
_GBTREE_PARAM = struct.Struct("<ii")  # num_trees, then num_parallel_tree or num_roots
_GBTREE_PARAM_SIZE = 160
_TREE_PARAM = struct.Struct("<iiiiii")  # roots, nodes, deleted, depth, features, leaf vector size
_TREE_PARAM_SIZE = 148
_GBLINEAR_PARAM_SIZE = 136
_NODE = np.dtype(
    [("parent", "<i4"), ("left", "<i4"), ("right", "<i4"), ("split", "<u4"), ("value", "<f4")]
)
_STAT = np.dtype(
    [("loss_chg", "<f4"), ("sum_hess", "<f4"), ("base_weight", "<f4"), ("children", "<i4")]
)
_DEFAULT_LEFT = 1 << 31
_DELETED = 0xFFFFFFFF
_MAX_NAME = 256
# names of 0.x and 1.x that XGBoost 3 no longer knows
_RENAMED_OBJECTIVES = {
    "reg:linear": "reg:squarederror",
    "gpu:reg:linear": "reg:squarederror",
    "gpu:reg:logistic": "reg:logistic",
    "gpu:binary:logistic": "binary:logistic",
    "gpu:binary:logitraw": "binary:logitraw",
}
# XGBoost 3 needs these objectives' parameters; 0.x files do not carry them (defaults then)
_OBJECTIVE_DEFAULTS = {
    "count:poisson": ("poisson_regression_param", {"max_delta_step": "0.7"}),
    "reg:tweedie": ("tweedie_regression_param", {"tweedie_variance_power": "1.5"}),
}
# objectives whose margin is not the score: their link, in the base_score of files before 1.0
_LOGISTIC = {"reg:logistic", "binary:logistic"}
_LOG_LINK = {"count:poisson", "reg:gamma", "reg:tweedie", "survival:cox"}


class _Reader:
    """Reads the stream front to back; every read names what it reads for the error."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise ModelLoadError(
                f"legacy binary model is truncated at byte {self.offset}: reading {what} needs "
                f"{size} bytes, {len(self.data) - self.offset} are left"
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, layout: struct.Struct, size: int, what: str) -> tuple[Any, ...]:
        return layout.unpack_from(self.take(size, what))

    def count(self, what: str) -> int:
        (value,) = struct.unpack("<Q", self.take(8, f"the length of {what}"))
        return int(value)

    def string(self, what: str) -> str:
        length = self.count(what)
        if length > max(_MAX_NAME, len(self.data)):
            raise ModelLoadError(f"legacy binary model: {what} has an impossible length")
        raw = self.take(length, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelLoadError(f"legacy binary model: {what} is not text ({exc})") from exc

    def name(self, what: str) -> str:
        """A short identifier (objective or booster name): anything else means garbage."""
        value = self.string(what)
        if not value or len(value) > _MAX_NAME or not value.isascii() or not value.isprintable():
            raise ModelLoadError(f"not an XGBoost legacy binary model: {what} is not a name")
        return value

    def array(self, dtype: np.dtype[Any], count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(count * dtype.itemsize, what), dtype=dtype)

    def floats(self, what: str) -> np.ndarray:
        count = self.count(what)
        return self.array(np.dtype("<f4"), count, what)


def legacy_to_json(data: bytes) -> bytes:
    """The JSON model XGBoost 3 loads, for a legacy binary model (with or without ``binf``)."""
    reader = _Reader(data[len(_HEADER) :] if data.startswith(_HEADER) else data)
    (
        base_score,
        num_feature,
        num_class,
        has_attributes,
        _has_metrics,
        major,
        minor,
        num_target,
        boost_from_average,
    ) = reader.unpack(_LEARNER_PARAM, _LEARNER_PARAM_SIZE, "the learner parameters")
    if num_class < 0 or num_feature == 0 or major > 2:  # the values stay unsaid (below)
        raise ModelLoadError(
            "not an XGBoost legacy binary model: its learner parameters are out of range "
            "(no features, a negative number of classes, or a format version above 2)"
        )
    objective = reader.name("the objective name")
    objective = _RENAMED_OBJECTIVES.get(objective, objective)
    booster_name = reader.name("the booster name")
    groups = max(num_class, num_target, 1)
    booster: dict[str, Any]
    if booster_name == "gbtree":
        booster = {"name": "gbtree", "model": _gbtree(reader, num_feature, groups)}
    elif booster_name == "dart":
        model = _gbtree(reader, num_feature, groups)
        weights = reader.floats("the dart tree weights") if model["trees"] else np.zeros(0)
        if len(weights) != len(model["trees"]):
            raise ModelLoadError(
                f"legacy binary dart model has {len(weights)} tree weights for "
                f"{len(model['trees'])} trees"
            )
        booster = {
            "name": "dart",
            "gbtree": {"name": "gbtree", "model": model},
            "weight_drop": _numbers(weights),
        }
    elif booster_name == "gblinear":
        booster = {"name": "gblinear", "model": _gblinear(reader, num_feature, groups)}
    else:
        raise ModelLoadError(f"legacy binary model has an unknown booster {booster_name!r}")
    attributes = _attributes(reader) if has_attributes else {}
    objective_config = _objective(objective, num_class, attributes)
    base_score = _json_base_score(objective, base_score, (major, minor))
    learner = {
        "attributes": attributes,
        "feature_names": [],
        "feature_types": [],
        "gradient_booster": booster,
        "learner_model_param": {
            "base_score": repr(float(base_score)),
            "boost_from_average": str(boost_from_average),
            "num_class": str(num_class),
            "num_feature": str(num_feature),
            "num_target": str(max(num_target, 1)),
        },
        "objective": objective_config,
    }
    return json.dumps({"learner": learner, "version": JSON_SCHEMA_VERSION}).encode()


def _gbtree(reader: _Reader, num_feature: int, groups: int) -> dict[str, Any]:
    num_trees, parallel = reader.unpack(_GBTREE_PARAM, _GBTREE_PARAM_SIZE, "the gbtree parameters")
    parallel = max(parallel, 1)  # 1.7 stores num_parallel_tree here, 1.5 and older num_roots (1)
    if num_trees < 0 or num_trees % (parallel * groups):
        raise ModelLoadError(
            f"legacy binary model has {num_trees} trees, not whole rounds of {parallel} parallel "
            f"trees for {groups} output groups"
        )
    trees = [_tree(reader, index, num_feature) for index in range(num_trees)]
    tree_info = reader.array(np.dtype("<i4"), num_trees, "the tree groups (tree_info)")
    if num_trees and (tree_info.min() < 0 or tree_info.max() >= groups):
        raise ModelLoadError(
            f"legacy binary model assigns trees to output groups outside 0..{groups - 1}"
        )
    return {
        "gbtree_model_param": {
            "num_parallel_tree": str(parallel),
            "num_trees": str(num_trees),
            "size_leaf_vector": "0",
        },
        "tree_info": tree_info.tolist(),
        "trees": trees,
    }


def _tree(reader: _Reader, index: int, num_feature: int) -> dict[str, Any]:
    what = f"tree {index}"
    _, num_nodes, num_deleted, _, _, leaf_vector = reader.unpack(
        _TREE_PARAM, _TREE_PARAM_SIZE, f"the parameters of {what}"
    )
    if num_nodes <= 0 or leaf_vector != 0:
        raise ModelLoadError(
            f"legacy binary model: {what} has num_nodes={num_nodes}, "
            f"size_leaf_vector={leaf_vector} (only plain trees with nodes are supported)"
        )
    nodes = reader.array(_NODE, num_nodes, f"the nodes of {what}")
    stats = reader.array(_STAT, num_nodes, f"the node statistics of {what}")
    left, right, split = nodes["left"], nodes["right"], nodes["split"]
    parents = nodes["parent"].view("<u4") & (_DEFAULT_LEFT - 1)
    deleted = split == _DELETED
    inner = (left != -1) & ~deleted
    feature = split & (_DEFAULT_LEFT - 1)
    if np.any(parents[1:] >= num_nodes) or np.any(
        inner & ((left <= 0) | (left >= num_nodes) | (right <= 0) | (right >= num_nodes))
    ):
        raise ModelLoadError(
            f"legacy binary model: {what} links to nodes outside 0..{num_nodes - 1}"
        )
    # each child names its parent back: no node is reached twice, so walking the tree ends
    children = np.concatenate([left[inner], right[inner]])
    if np.any(parents[children] != np.tile(np.flatnonzero(inner), 2)) or np.any(deleted[children]):
        raise ModelLoadError(
            f"legacy binary model: the nodes of {what} do not form a tree (a child's parent is "
            "another node, or a child was deleted)"
        )
    if np.any(inner & (feature >= num_feature)):
        raise ModelLoadError(
            f"legacy binary model: {what} splits on a feature outside 0..{num_feature - 1}"
        )
    if int(deleted[1:].sum()) != num_deleted:
        raise ModelLoadError(
            f"legacy binary model: {what} says {num_deleted} deleted nodes, has "
            f"{int(deleted[1:].sum())}"
        )
    return {
        "base_weights": _numbers(stats["base_weight"]),
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": (split >> 31).astype(int).tolist(),
        "id": index,
        "left_children": left.tolist(),
        "loss_changes": _numbers(stats["loss_chg"]),
        "parents": parents.tolist(),
        "right_children": right.tolist(),
        "split_conditions": _numbers(nodes["value"]),
        "split_indices": feature.tolist(),
        "split_type": [0] * num_nodes,
        "sum_hessian": _numbers(stats["sum_hess"]),
        "tree_param": {
            "num_deleted": str(num_deleted),
            "num_feature": str(num_feature),
            "num_nodes": str(num_nodes),
            "size_leaf_vector": "0",
        },
    }


def _gblinear(reader: _Reader, num_feature: int, groups: int) -> dict[str, Any]:
    reader.take(_GBLINEAR_PARAM_SIZE, "the gblinear parameters")
    weights = reader.floats("the gblinear weights")
    if len(weights) != (num_feature + 1) * groups:
        raise ModelLoadError(
            f"legacy binary gblinear model has {len(weights)} weights, expected "
            f"{(num_feature + 1) * groups} ({num_feature} features + bias, {groups} groups)"
        )
    return {"weights": _numbers(weights)}


def _attributes(reader: _Reader) -> dict[str, str]:
    count = reader.count("the attributes")
    if count > len(reader.data):
        raise ModelLoadError(f"legacy binary model: impossible attribute count {count}")
    pairs = {}
    for number in range(count):
        key = reader.string(f"attribute {number}'s name")
        pairs[key] = reader.string(f"attribute {key!r}")
    return pairs


def _objective(name: str, num_class: int, attributes: dict[str, str]) -> dict[str, Any]:
    """The objective's configuration: saved since 1.0 (attribute ``objective``), else defaults.
    Consumes the attributes the loader of the old version consumed."""
    attributes.pop("metrics", None)
    saved = attributes.pop("objective", None)
    max_delta_step = attributes.pop("count_poisson_max_delta_step", None)
    if saved is not None:
        try:
            config = json.loads(saved)
        except ValueError as exc:
            raise ModelLoadError(f"legacy binary model: its objective is not JSON: {exc}") from exc
        if not isinstance(config, dict):
            raise ModelLoadError("legacy binary model: its objective configuration is not a map")
        config["name"] = name
        return config
    config = {"name": name}
    if name.startswith("multi:"):
        config["softmax_multiclass_param"] = {"num_class": str(num_class)}
    elif name in _OBJECTIVE_DEFAULTS:
        key, defaults = _OBJECTIVE_DEFAULTS[name]
        config[key] = dict(defaults)
        if name == "count:poisson" and max_delta_step is not None:
            config[key]["max_delta_step"] = max_delta_step
    return config


def _json_base_score(objective: str, stored: float, version: tuple[int, int]) -> float:
    """The base_score JSON holds (the score XGBoost 3 puts through the objective's link) that
    gives the margin the version that wrote the file used. Before 1.0 the file holds the margin
    itself; 1.0-1.2 applied the logit to binary:logitraw's base_score, which 1.3 on do not."""
    if version < (1, 0):
        if objective in _LOGISTIC:
            return 1.0 / (1.0 + math.exp(-stored))
        if objective in _LOG_LINK:
            return math.exp(stored)
    elif objective == "binary:logitraw" and version < (1, 3) and 0.0 < stored < 1.0:
        return math.log(stored / (1.0 - stored))
    return stored


def _numbers(values: np.ndarray) -> list[float]:
    """Exact: each float32 becomes the float64 of the same value (JSON prints it exactly)."""
    exact: list[float] = values.astype(np.float64).tolist()
    return exact
