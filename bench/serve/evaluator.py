"""CPU time per predict call: the exact tree evaluator (``infermodes.predict.trees``) with each
kernel this CPU runs (scalar, AVX2, AVX-512: ``TreeEnsemble.kernel``) against XGBoost's C
predict (``NativeBooster``, one thread), on the Abalone model, for 1, 8, 64 and 2M rows; all
interleaved, the best of ``--repeats`` rounds each (process CPU time, so other people's load on
the machine disturbs it little). It also checks that each kernel agrees with XGBoost bit for bit.
``--depths 4,5,6`` adds 50-tree models of those depths on random rows (kernels by tree depth).

    flock /tmp/infermodes-bench.lock .venv/bin/python bench/serve/evaluator.py --model M.tar.gz
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from infermodes.predict import _trees
from infermodes.predict.artifacts import extract_member
from infermodes.predict.native import NativeBooster
from infermodes.predict.trees import TreeEnsemble

REPO = Path(__file__).resolve().parent.parent.parent
SIZES = (1, 8, 64, 2_000_000)


def per_call(predict: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, calls: int) -> float:
    """CPU seconds per call over ``calls`` calls."""
    started = time.process_time()
    for _ in range(calls):
        predict(rows)
    return (time.process_time() - started) / calls


def can_run(ensemble: TreeEnsemble, kernel: str) -> bool:
    """Whether the ensemble's trees run on the kernel (left set to it when they do)."""
    try:
        ensemble.kernel = kernel
    except ValueError:
        return False
    return True


def compare(native: NativeBooster, rows: np.ndarray, label: str, repeats: int) -> None:
    """Print XGBoost's time per call and each kernel's, interleaved, and whether each kernel
    gives XGBoost's bits."""
    ensemble = TreeEnsemble.of(native)
    kernels = [kernel for kernel in _trees.KERNELS if can_run(ensemble, kernel)]
    expected = native.predict(rows).view(np.uint32)
    same = {}
    for kernel in kernels:
        ensemble.kernel = kernel
        same[kernel] = np.array_equal(ensemble.predict(rows).view(np.uint32), expected)
    size = rows.shape[0]
    calls = max(1, 20_000 // size)
    ours: dict[str, list[float]] = {kernel: [] for kernel in kernels}
    theirs = []
    for _ in range(repeats):
        for kernel in kernels:
            ensemble.kernel = kernel
            ours[kernel].append(per_call(ensemble.predict, rows, calls))
        theirs.append(per_call(native.predict, rows, calls))
    xgboost = min(theirs)
    print(f"{label:>14}: XGBoost {xgboost * 1e6:10.1f} us ({xgboost / size * 1e9:7.1f} ns/row)")
    for kernel in kernels:
        best = min(ours[kernel])
        print(
            f"{'':>15}{kernel:>7} {best * 1e6:10.1f} us ({best / size * 1e9:7.1f} ns/row),"
            f" {xgboost / best:5.2f}x XGBoost's speed, bitwise equal: {same[kernel]}"
        )


def by_depth(depth: int) -> NativeBooster:
    """50 trees of the given depth on 10 random features (no missing values)."""
    import xgboost as xgb  # the bench's only use of the Python package; not needed otherwise

    features = np.random.default_rng(1).standard_normal((20_000, 10)).astype(np.float32)
    labels = features[:, 0] * 2 + np.sin(features[:, 1] * 3) + features[:, 2] * features[:, 3]
    params = {"max_depth": depth, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(features, labels), 50)
    native = NativeBooster(bytes(booster.save_raw("ubj")))
    native.set_threads(1)
    return native


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model.tar.gz (default: train Abalone)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--depths",
        default="",
        help="also 50-tree models of these depths (e.g. 4,5,6,8,10) on 200,000 random rows",
    )
    args = parser.parse_args()
    directory = args.model.parent if args.model else Path(tempfile.mkdtemp())
    if not args.model:
        train = REPO / "examples" / "abalone" / "train.py"
        subprocess.run([sys.executable, str(train), "--output", str(directory)], check=True)
    tarball = args.model or directory / "model.tar.gz"
    native = NativeBooster(extract_member(tarball.read_bytes()))
    native.set_threads(1)
    test_rows = np.loadtxt(directory / "test.csv", delimiter=",", dtype=np.float32)
    for size in SIZES:
        rows = np.resize(test_rows, (size, test_rows.shape[1]))
        if size == SIZES[-1]:  # one row in ten with a missing value, as real data has
            rows[::10, 3] = np.nan
        compare(native, rows, f"{size} rows", args.repeats)
    random_rows = np.random.default_rng(2).standard_normal((200_000, 10)).astype(np.float32)
    for depth in filter(None, args.depths.split(",")):
        compare(by_depth(int(depth)), random_rows, f"depth {depth}", args.repeats)


if __name__ == "__main__":
    main()
