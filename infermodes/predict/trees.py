"""An exact tree evaluator of our own, for the models where it certainly predicts what XGBoost
predicts, bit for bit; every other model keeps XGBoost's own predict (``NativeBooster``).

Why: XGBoost's C predict costs ~20 µs per call whatever the rows (context and proxy set-up,
configuration parsing), while scoring one row of a 50-tree model is well under a microsecond of
tree walking. Treelite was measured and is not exact (it sums in another order).

What makes it exact, read from XGBoost's CPU predictor (v3.2.0: ``src/predictor/cpu_predictor.cc``,
``predict_fn.h``, ``array_tree_layout.h``, ``src/learner.cc``, ``src/objective/``):

- each row's output (one per output group: per class for the softmax objectives) starts from
  the base margin: the objective's ``ProbToMargin`` of ``learner_model_param.base_score`` (the
  identity for ``IDENTITY_OBJECTIVES`` and ``SOFTMAX_OBJECTIVES``, the bounded logit for
  ``SIGMOID_OBJECTIVES``), and each tree's leaf value is added to its group in tree order, in
  float32 (``out_predt(row, group) += leaf``);
- at a numerical split the row goes left when ``value < split_condition`` (float32), to the
  default child when the value is missing (NaN; our ``missing`` is NaN), to ``left + 1``
  otherwise; infinities are plain values;
- the prediction is the objective's ``PredTransform`` of the margins: the margin itself,
  ``common::Sigmoid`` for the logistic objectives, ``common::Softmax`` (or the index of the
  largest margin, ``FindMaxIndex``) for the multi-class ones, computed in ``_trees.c`` with
  XGBoost's own expressions (float, the softmax sum in double) on the same glibc
  ``expf``/``logf`` that ``libxgboost.so`` imports (it links no vector math library), in the
  same process.

The trees come from the booster's own UBJSON (``NativeBooster.save_ubj``), where every float is
its float32 bits, so the source format (JSON, UBJ, legacy binary) does not matter. The base
score is the one decimal number in the model, written as the shortest decimal of its float32;
it is read back to the float32 nearest to it, exactly (``_nearest_float32``). Anything outside
those bounds is refused (``NotExact``): dart and gblinear, categorical splits or categorical
features, multi-target models and vector leaves, a right child not at
``left + 1``, objectives with another link (exp for gamma, Poisson, Tweedie...). And after
building, a probe of rows at and beside every split threshold, with NaNs and infinities, must
equal XGBoost's predictions bitwise, or the model keeps XGBoost.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from infermodes.predict.native import NativeBooster, float32_rows
from infermodes.predict.ubj import UBJReader

try:
    from infermodes.predict import _trees
except ImportError:  # pragma: no cover - an install without a C compiler
    _trees = None  # type: ignore[assignment]

log = logging.getLogger("infermodes.predict")

AVAILABLE = _trees is not None
# _trees.c's transforms: XGBoost's PredTransform of each objective below
_TRANSFORM_NONE, _TRANSFORM_SIGMOID, _TRANSFORM_SOFTPROB, _TRANSFORM_ARGMAX = range(4)

IDENTITY_OBJECTIVES = frozenset(
    {
        # PredTransform and ProbToMargin both the identity (src/objective/regression_loss.h,
        # regression_obj.cu, quantile_obj.cu, lambdarank_obj.cc; ObjFunction's defaults where
        # not overridden)
        "reg:squarederror",
        "reg:linear",
        "reg:squaredlogerror",
        "reg:pseudohubererror",
        "reg:absoluteerror",
        "reg:quantileerror",
        "binary:logitraw",
        "rank:pairwise",
        "rank:ndcg",
        "rank:map",
    }
)
SIGMOID_OBJECTIVES = frozenset(
    # PredTransform common::Sigmoid, ProbToMargin common::Logit of the bounded base score
    # (LogisticRegression and LogisticClassification in src/objective/regression_loss.h):
    # reproduced in _trees.c with the same expressions on the same glibc expf and logf
    {"binary:logistic", "reg:logistic"}
)
SOFTMAX_OBJECTIVES = {
    # one output group per class, ProbToMargin the identity (the intercept is estimated as
    # margins); PredTransform common::Softmax of each row's margins, or the index of the
    # largest (common::FindMaxIndex) for multi:softmax (src/objective/multiclass_obj.cu)
    "multi:softprob": _TRANSFORM_SOFTPROB,
    "multi:softmax": _TRANSFORM_ARGMAX,
}
_TRANSFORMS = {
    **dict.fromkeys(IDENTITY_OBJECTIVES, _TRANSFORM_NONE),
    **dict.fromkeys(SIGMOID_OBJECTIVES, _TRANSFORM_SIGMOID),
    **SOFTMAX_OBJECTIVES,
}
PROBE_ROWS = 512


class NotExact(Exception):
    """The model is outside what the evaluator reproduces exactly; the message says why."""


class TreeEnsemble:
    """A compiled gbtree model: XGBoost's predictions to the bit (one float32 per row, or
    one per class and row for ``multi:softprob``)."""

    def __init__(self, forest: _trees.Forest, num_features: int, per_row: int) -> None:
        self._forest = forest
        self.num_features = num_features
        self.per_row = per_row

    @classmethod
    def of(cls, booster: NativeBooster) -> TreeEnsemble:
        """The booster's trees, checked against its own predictions; NotExact if out of bounds."""
        if _trees is None:
            raise NotExact("the native tree evaluator is not built (no C compiler at install)")
        objective = booster.objective
        transform = _TRANSFORMS.get(objective)
        if transform is None:
            raise NotExact(f"objective {objective} has a link the evaluator does not reproduce")
        learner = UBJReader(booster.save_ubj()).document()["learner"]
        booster_json = learner["gradient_booster"]
        if booster_json["name"] != "gbtree":
            raise NotExact(f"booster {booster_json['name']}, not gbtree")
        params = learner["learner_model_param"]
        classes = booster.num_class
        groups = classes if objective in SOFTMAX_OBJECTIVES else 1
        if int(params.get("num_target", "1")) != 1 or (classes > 1) != (groups > 1):
            raise NotExact("more than one output per row, and not one per class")
        if "c" in learner.get("feature_types", []):
            raise NotExact("categorical features")
        model = booster_json["model"]
        if len(model.get("cats", {}).get("enc", [])):
            raise NotExact("a categorical encoding")
        bases = _base_scores(params["base_score"], groups)
        per_row = groups if transform == _TRANSFORM_SOFTPROB else 1
        forest, thresholds = _forest(model, bases, booster.num_features, transform)
        ensemble = cls(forest, booster.num_features, per_row)
        ensemble._check_against(booster, thresholds)
        return ensemble

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predictions for a 2-D matrix of ``num_features`` columns (NaN = missing), in the
        shape XGBoost gives them: one value per row (or a row of class probabilities), or
        (0, 0) for no rows."""
        if not rows.shape[0]:
            return np.empty((0, 0), dtype=np.float32)
        rows = float32_rows(rows)
        shape = (rows.shape[0], self.per_row) if self.per_row > 1 else (rows.shape[0],)
        out = np.empty(shape, dtype=np.float32)
        self._forest.predict(rows, out)
        return out

    @property
    def kernel(self) -> str:
        """The code that walks the trees of whole SIMD registers of rows (``_trees.KERNELS``):
        the widest this CPU runs, or ``"scalar"`` where a tree is too deep to pad. Setting it
        (to compare them) raises ValueError for one this CPU or these trees cannot run."""
        return self._forest.kernel

    @kernel.setter
    def kernel(self, name: str) -> None:
        self._forest.kernel = name

    def _check_against(self, booster: NativeBooster, thresholds: np.ndarray) -> None:
        """Rows at, just below and around every split threshold, NaNs and infinities: the
        same bits as XGBoost's, or NotExact."""
        values = np.concatenate([thresholds, np.array([0, 1, -1], dtype=np.float32)])
        # a fixed scatter over the values (numpy.random would add 20 ms of import to a cold
        # start): each cell a threshold, a quarter of them one float32 below it, one in twenty
        # NaN or an infinity
        cells = np.arange(PROBE_ROWS * self.num_features, dtype=np.uint64)
        rows = values[(cells * np.uint64(2654435761)) % np.uint64(values.size)]
        rows = rows.reshape(PROBE_ROWS, self.num_features)
        scatter = ((cells * np.uint64(40503)) >> np.uint64(7)).reshape(rows.shape)
        below = scatter % np.uint64(4) == 0
        rows[below] = np.nextafter(rows[below], np.float32(-np.inf))
        special = np.array([np.nan, np.inf, -np.inf], dtype=np.float32)
        rare = scatter % np.uint64(20) == 1
        rows[rare] = special[scatter[rare] % np.uint64(3)]
        ours, theirs = self.predict(rows), booster.predict(rows)
        if ours.shape != theirs.shape or not np.array_equal(
            ours.view(np.uint32), np.ascontiguousarray(theirs).view(np.uint32)
        ):
            raise NotExact("differs from XGBoost's predictions on the probe rows")


def compile_booster(booster: NativeBooster) -> TreeEnsemble | None:
    """The exact evaluator of the booster, or None (logged why): predict with XGBoost."""
    try:
        ensemble = TreeEnsemble.of(booster)
    except NotExact as exc:
        log.info("predicting with XGBoost itself (the tree evaluator would not be exact: %s)", exc)
        return None
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("predicting with XGBoost itself: cannot read the model's trees: %s", exc)
        return None
    log.info("predicting with the exact tree evaluator (%s kernel)", ensemble.kernel)
    return ensemble


def _forest(
    model: dict[str, Any], bases: np.ndarray, num_features: int, transform: int
) -> tuple[_trees.Forest, np.ndarray]:
    """The C forest of a gbtree model's trees (numerical splits), each of its output group,
    and the thresholds of its splits (the probe's values)."""
    trees = model["trees"]
    if not trees:
        raise NotExact("no trees")
    groups = np.asarray(model.get("tree_info", np.zeros(len(trees))), dtype=np.int32)
    if groups.shape != (len(trees),) or np.any((groups < 0) | (groups >= bases.size)):
        raise NotExact("trees of output groups the model does not have")
    lefts, features, values, defaults, roots = [], [], [], [], []
    offset = 0
    for tree in trees:
        if tree["tree_param"].get("size_leaf_vector", "1") not in ("0", "1"):
            raise NotExact("vector leaves (a multi-target tree)")
        if np.any(np.asarray(tree.get("split_type", []))) or len(tree.get("categories", [])):
            raise NotExact("categorical splits")
        left = np.asarray(tree["left_children"], dtype=np.int32)
        right = np.asarray(tree["right_children"], dtype=np.int32)
        split = left >= 0
        if np.any(right[split] != left[split] + 1):
            raise NotExact("a right child not beside its left one (XGBoost assumes left + 1)")
        lefts.append(np.where(split, left + offset, -1).astype(np.int32))
        features.append(np.asarray(tree["split_indices"], dtype=np.int32))
        values.append(np.asarray(tree["split_conditions"], dtype=np.float32))
        defaults.append(np.asarray(tree["default_left"], dtype=np.uint8))
        roots.append(offset)
        offset += left.shape[0]
    all_lefts, all_values = np.concatenate(lefts), np.concatenate(values)
    forest = _trees.Forest(
        all_lefts,
        np.concatenate(features),
        all_values,
        np.concatenate(defaults),
        np.array(roots, dtype=np.int32),
        bases,
        num_features,
        transform=transform,
        groups=groups,
    )
    return forest, all_values[all_lefts >= 0]


def _base_scores(text: str, groups: int) -> np.ndarray:
    """``"[9.927906E0]"`` (or ``"5E-1"`` from older versions) -> one float32 per output group:
    one value for all of them (XGBoost's HandleOldFormat), or one each."""
    parts = text.strip().strip("[]").split(",")
    if len(parts) not in (1, groups):
        raise NotExact(f"base_score {text!r} for {groups} output groups")
    values = np.array([_nearest_float32(part.strip()) for part in parts], dtype=np.float32)
    return np.resize(values, groups)


def _nearest_float32(text: str) -> np.float32:
    """The float32 nearest to a decimal. ``float()`` rounds it correctly to float64, and
    rounding is monotonic, so the decimal lies on the same side of every float32 midpoint as
    its float64 does, unless that float64 is a midpoint itself (then we cannot tell: refused);
    float32 midpoints are exact in float64."""
    value = float(text)
    nearest = np.float32(value)
    if not np.isfinite(nearest):
        raise NotExact(f"base_score {text!r} is not finite in float32")
    with np.errstate(over="ignore"):  # beside the largest float32: infinity, no midpoint
        below = float(np.nextafter(nearest, np.float32(-np.inf)))
        above = float(np.nextafter(nearest, np.float32(np.inf)))
    if value in ((below + float(nearest)) / 2, (float(nearest) + above) / 2):
        raise NotExact(f"base_score {text!r} is halfway between two float32 values")
    return nearest
