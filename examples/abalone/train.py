"""Train the Abalone regression of the managed platform's XGBoost example and package it.

Features (10, in this order): ``sex`` one-hot as M, F, I (three 0/1 columns), then length,
diameter, height, whole_weight, shucked_weight, viscera_weight, shell_weight. Target: rings.
Writes ``model.tar.gz`` holding the booster as the member ``xgboost-model`` (UBJ), the layout
the platform's XGBoost container uses, plus ``test.csv`` (features only, no header) and
``test_labels.csv`` for trying the endpoint, and the whole data set's features split into
``batch/input/part-N.csv`` objects for a batch transform (``batch.yaml``).

    python examples/abalone/train.py --output examples/abalone/model
"""

from __future__ import annotations

import argparse
import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import xgboost as xgb

HERE = Path(__file__).resolve().parent
SEXES = ("M", "F", "I")
PARAMS = {
    "objective": "reg:squarederror",
    "max_depth": 5,
    "eta": 0.2,
    "gamma": 4,
    "min_child_weight": 6,
    "subsample": 0.7,
    "seed": 0,
    "nthread": 1,
}
NUM_ROUND = 50


def load_abalone(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features (sex one-hot + 7 measurements) and rings from the CSV with a header."""
    features: list[list[float]] = []
    labels: list[float] = []
    with path.open(newline="") as handle:
        for record in csv.DictReader(handle):
            one_hot = [1.0 if record["sex"] == sex else 0.0 for sex in SEXES]
            measures = [
                float(record[name])
                for name in (
                    "length",
                    "diameter",
                    "height",
                    "whole_weight",
                    "shucked_weight",
                    "viscera_weight",
                    "shell_weight",
                )
            ]
            features.append(one_hot + measures)
            labels.append(float(record["rings"]))
    return np.array(features, dtype=np.float32), np.array(labels, dtype=np.float32)


def train(features: np.ndarray, labels: np.ndarray) -> xgb.Booster:
    return xgb.train(PARAMS, xgb.DMatrix(features, label=labels), num_boost_round=NUM_ROUND)


def write_model_tar(booster: xgb.Booster, path: Path) -> None:
    payload = bytes(booster.save_raw("ubj"))
    info = tarfile.TarInfo("xgboost-model")
    info.size = len(payload)
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(info, io.BytesIO(payload))


def write_batch_inputs(features: np.ndarray, folder: Path, objects: int) -> None:
    """The features in ``objects`` CSV files of about equal size, rows in data set order."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("part-*.csv"):
        stale.unlink()
    for index, part in enumerate(np.array_split(features, objects)):
        np.savetxt(folder / f"part-{index}.csv", part, delimiter=",", fmt="%g")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE / "abalone.csv")
    parser.add_argument("--output", type=Path, default=HERE / "model")
    parser.add_argument(
        "--batch-objects", type=int, default=4, help="objects under batch/input/ (default 4)"
    )
    args = parser.parse_args()
    features, labels = load_abalone(args.data)
    order = np.random.default_rng(0).permutation(len(labels))
    split = int(len(order) * 0.9)
    train_rows, test_rows = order[:split], order[split:]
    booster = train(features[train_rows], labels[train_rows])
    args.output.mkdir(parents=True, exist_ok=True)
    write_model_tar(booster, args.output / "model.tar.gz")
    np.savetxt(args.output / "test.csv", features[test_rows], delimiter=",", fmt="%g")
    np.savetxt(args.output / "test_labels.csv", labels[test_rows], fmt="%g")
    write_batch_inputs(features, args.output / "batch" / "input", args.batch_objects)
    rmse = float(
        np.sqrt(np.mean((booster.inplace_predict(features[test_rows]) - labels[test_rows]) ** 2))
    )
    print(
        f"wrote {args.output / 'model.tar.gz'} "
        f"(test RMSE {rmse:.3f} rings on {len(test_rows)} rows)"
    )


if __name__ == "__main__":
    main()
