"""The container's selectable outputs and the response shapes: what each key is per objective
(values chosen so float32 holds them exactly), which keys an objective refuses at load, and how
CSV, JSON and jsonlines carry scores and selections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infermodes.errors import ModelLoadError, NotAcceptable
from infermodes.predict import codecs
from infermodes.predict.model import XGBoostModel
from infermodes.predict.outputs import OutputSelection

ALL_BINARY = "predicted_label,labels,probability,probabilities,raw_score,raw_scores"


def select(keys: str, objective: str, predictions: list[object], num_class: int = 0) -> object:
    selection = OutputSelection.for_model(keys, objective, num_class)
    return selection.rows(np.array(predictions, dtype=np.float32))


def test_binary_logistic_offers_every_classification_key() -> None:
    assert select(ALL_BINARY, "binary:logistic", [0.25, 0.75]) == [
        {
            "predicted_label": 0,
            "labels": [0, 1],
            "probability": 0.25,
            "probabilities": [0.75, 0.25],
            "raw_score": 0.25,
            "raw_scores": [0.75, 0.25],
        },
        {
            "predicted_label": 1,
            "labels": [0, 1],
            "probability": 0.75,
            "probabilities": [0.25, 0.75],
            "raw_score": 0.75,
            "raw_scores": [0.25, 0.75],
        },
    ]


def test_multi_softprob_picks_the_most_probable_class() -> None:
    rows = select(
        "probabilities, PREDICTED_LABEL,labels,probability,raw_score,raw_scores",
        "multi:softprob",
        [[0.25, 0.5, 0.25], [0.75, 0.125, 0.125]],
        num_class=3,
    )
    assert rows == [
        {
            "probabilities": [0.25, 0.5, 0.25],
            "predicted_label": 1,
            "labels": [0, 1, 2],
            "probability": 0.5,
            "raw_score": 0.5,
            "raw_scores": [0.25, 0.5, 0.25],
        },
        {
            "probabilities": [0.75, 0.125, 0.125],
            "predicted_label": 0,
            "labels": [0, 1, 2],
            "probability": 0.75,
            "raw_score": 0.75,
            "raw_scores": [0.75, 0.125, 0.125],
        },
    ]


@pytest.mark.parametrize(
    ("objective", "prediction", "label"),
    [("multi:softmax", 2.0, 2.0), ("binary:hinge", 1.0, 1.0), ("binary:logitraw", -0.5, 0)],
)
def test_label_predicting_objectives(objective: str, prediction: float, label: float) -> None:
    rows = select("predicted_label,raw_score,raw_scores,labels", objective, [prediction], 4)
    labels = [0, 1, 2, 3] if objective.startswith("multi:") else [0, 1]
    assert rows == [
        {
            "predicted_label": label,
            "raw_score": prediction,
            "raw_scores": [1.0 - prediction, prediction],  # the container's two-class view
            "labels": labels,
        }
    ]


def test_regression_offers_the_predicted_score() -> None:
    assert select("predicted_score", "reg:squarederror", [9.5]) == [{"predicted_score": 9.5}]


@pytest.mark.parametrize(
    ("keys", "objective", "message"),
    [
        ("probability", "reg:squarederror", "'probability' not available for the model's "),
        ("probability", "multi:softmax", "it offers predicted_label, labels, raw_score"),
        ("predicted_score", "binary:logistic", "'predicted_score' not available"),
        ("score", "binary:logistic", "unknown key(s) 'score'"),
        ("labels,,probability", "binary:logistic", "unknown key(s) ''"),
        ("labels,labels", "binary:logistic", "appears twice"),
        ("predicted_score", "count:poisson", "objective 'count:poisson' has no selectable"),
    ],
)
def test_wrong_keys_are_refused_when_the_model_loads(
    keys: str, objective: str, message: str
) -> None:
    with pytest.raises(ModelLoadError) as caught:
        OutputSelection.for_model(keys, objective, 3)
    assert message in str(caught.value)


SOFTPROB = np.array([[0.25, 0.5, 0.25], [0.75, 0.125, 0.125]], np.float32)


def test_scores_in_each_output_type() -> None:
    single = np.array([0.25, 0.75], np.float32)
    assert codecs.encode(single, codecs.CSV) == b"0.25\n0.75\n"
    assert json.loads(codecs.encode(single, codecs.JSON)) == {
        "predictions": [{"score": 0.25}, {"score": 0.75}]
    }
    assert codecs.encode(single, codecs.JSONLINES) == b'{"score": 0.25}\n{"score": 0.75}\n'
    assert codecs.encode(SOFTPROB, codecs.CSV) == b"0.25,0.5,0.25\n0.75,0.125,0.125\n"
    assert json.loads(codecs.encode(SOFTPROB, codecs.JSON)) == {
        "predictions": [{"score": [0.25, 0.5, 0.25]}, {"score": [0.75, 0.125, 0.125]}]
    }
    assert codecs.encode(SOFTPROB, codecs.JSONLINES).splitlines() == [
        b'{"score": [0.25, 0.5, 0.25]}',
        b'{"score": [0.75, 0.125, 0.125]}',
    ]


def test_selections_in_each_output_type() -> None:
    selection = OutputSelection.for_model("predicted_label,probabilities", "multi:softprob", 3)
    assert codecs.encode(SOFTPROB, codecs.CSV, selection) == (
        b'1,"[0.25, 0.5, 0.25]"\n0,"[0.75, 0.125, 0.125]"\n'
    )
    entries = [
        {"predicted_label": 1, "probabilities": [0.25, 0.5, 0.25]},
        {"predicted_label": 0, "probabilities": [0.75, 0.125, 0.125]},
    ]
    assert json.loads(codecs.encode(SOFTPROB, codecs.JSON, selection)) == {"predictions": entries}
    lines = codecs.encode(SOFTPROB, codecs.JSONLINES, selection).splitlines()
    assert [json.loads(line) for line in lines] == entries


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("application/jsonlines", codecs.JSONLINES),
        ("application/jsonlines; charset=utf-8", codecs.JSONLINES),
        ("application/*", codecs.JSON),
        ("*/*", codecs.CSV),
        ("application/json;q=0.5, application/jsonlines", codecs.JSONLINES),
        ("application/*;q=0.5, application/json;q=0", codecs.JSONLINES),
    ],
)
def test_accept_negotiates_jsonlines(header: str, chosen: str) -> None:
    assert codecs.accept_of(header) == chosen


def test_an_accept_nothing_matches_lists_jsonlines() -> None:
    with pytest.raises(NotAcceptable, match="application/jsonlines"):
        codecs.accept_of("application/x-recordio-protobuf")


LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy" / "1.0.2"


@pytest.mark.parametrize(
    ("name", "objective", "num_class", "key"),
    [
        ("regression", "reg:squarederror", 0, "predicted_score"),
        ("binary", "binary:logistic", 0, "probability"),
        ("multiclass", "multi:softprob", 3, "probabilities"),
        ("softmax", "multi:softmax", 3, "labels"),
    ],
)
def test_a_loaded_model_knows_its_objective(
    name: str, objective: str, num_class: int, key: str
) -> None:
    """Read from the booster's own configuration (XGBoosterSaveJsonConfig)."""
    model = XGBoostModel.load(str(LEGACY / f"{name}.bin"))
    assert (model.booster.objective, model.booster.num_class) == (objective, num_class)
    assert model.outputs is None
    chosen = XGBoostModel.load(str(LEGACY / f"{name}.bin"), inference_output=key)
    assert chosen.outputs == OutputSelection((key,), objective, num_class)


def test_a_key_the_objective_lacks_stops_the_load() -> None:
    with pytest.raises(ModelLoadError, match="'labels' not available .* 'reg:squarederror'"):
        XGBoostModel.load(str(LEGACY / "regression.bin"), inference_output="labels")
