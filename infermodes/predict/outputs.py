"""The selectable outputs of the managed platform's XGBoost container (its
``SAGEMAKER_INFERENCE_OUTPUT``): per prediction, the chosen keys computed from the booster's
output as that container computes them, so that clients written against it read the same
values. Which keys an objective offers is the container's table; where the container answers
an unavailable key with NaN on every request, we refuse it when the model loads, naming the keys
the objective offers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infermodes.errors import ModelLoadError

PREDICTED_LABEL = "predicted_label"
LABELS = "labels"
PROBABILITY = "probability"
PROBABILITIES = "probabilities"
RAW_SCORE = "raw_score"
RAW_SCORES = "raw_scores"
PREDICTED_SCORE = "predicted_score"
KEYS = (PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES, RAW_SCORE, RAW_SCORES, PREDICTED_SCORE)

_CLASSIFIER = (PREDICTED_LABEL, LABELS, RAW_SCORE, RAW_SCORES)
_PROBABILISTIC = (PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES, RAW_SCORE, RAW_SCORES)
OBJECTIVE_KEYS: dict[str, tuple[str, ...]] = {
    "reg:squarederror": (PREDICTED_SCORE,),
    "reg:logistic": (PREDICTED_SCORE,),
    "reg:gamma": (PREDICTED_SCORE,),
    "reg:absoluteerror": (PREDICTED_SCORE,),
    "reg:tweedie": (PREDICTED_SCORE,),
    "binary:logistic": _PROBABILISTIC,
    "binary:logitraw": _CLASSIFIER,
    "binary:hinge": _CLASSIFIER,
    "multi:softmax": _CLASSIFIER,
    "multi:softprob": _PROBABILISTIC,
}


def parse_keys(text: str) -> tuple[str, ...]:
    """``"predicted_label, probabilities"`` -> the keys, read as the container reads them
    (spaces dropped, lower case, comma-separated); an unknown or repeated key is an error."""
    keys = tuple(text.replace(" ", "").lower().split(","))
    unknown = [key for key in keys if key not in KEYS]
    if unknown:
        raise ModelLoadError(
            f"inference output: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"the keys are {', '.join(KEYS)}"
        )
    if len(set(keys)) != len(keys):
        raise ModelLoadError(f"inference output: a key appears twice in {text!r}")
    return keys


@dataclass(frozen=True)
class OutputSelection:
    """The keys chosen for a model's objective, checked when the model loads."""

    keys: tuple[str, ...]
    objective: str
    num_class: int

    @classmethod
    def for_model(cls, text: str, objective: str, num_class: int) -> OutputSelection:
        keys = parse_keys(text)
        offered = OBJECTIVE_KEYS.get(objective)
        if offered is None:
            raise ModelLoadError(
                f"inference output {text!r}: the model's objective {objective!r} has no "
                f"selectable outputs; they exist for {', '.join(OBJECTIVE_KEYS)}"
            )
        invalid = [key for key in keys if key not in offered]
        if invalid:
            raise ModelLoadError(
                f"inference output: {', '.join(map(repr, invalid))} not available for the "
                f"model's objective {objective!r}; it offers {', '.join(offered)}"
            )
        return cls(keys, objective, num_class)

    def rows(self, predictions: np.ndarray) -> list[dict[str, object]]:
        """One dict per prediction, the keys in the order chosen."""
        columns = [self._column(key, predictions) for key in self.keys]
        return [dict(zip(self.keys, values, strict=True)) for values in zip(*columns, strict=True)]

    def _column(self, key: str, predictions: np.ndarray) -> list[object]:
        """One key's values for every prediction. ``multi:softprob`` predicts a row of class
        probabilities per input; every other objective here one value."""
        per_class = self.objective == "multi:softprob"
        if key == LABELS:
            multi = self.objective.startswith("multi:")
            return [list(range(self.num_class)) if multi else [0, 1]] * predictions.shape[0]
        if key == PREDICTED_LABEL:
            if per_class:
                return list(predictions.argmax(axis=1).tolist())
            if self.objective == "binary:logistic":
                return list((predictions > 0.5).astype(int).tolist())
            if self.objective == "binary:logitraw":
                return list((predictions > 0).astype(int).tolist())
            return list(predictions.tolist())  # hinge and softmax predict the label
        if key in (PROBABILITY, RAW_SCORE) and per_class:
            return list(predictions.max(axis=1).tolist())
        if key in (PROBABILITIES, RAW_SCORES) and not per_class:
            # the container's two-class view of one score, for every objective that has one
            return [[1.0 - score, score] for score in predictions.tolist()]
        return list(
            predictions.tolist()
        )  # predicted_score, probability, raw_score, softprob's lists
