"""CPU time per predict call: the exact tree evaluator (``infermodes.predict.trees``) with each
kernel this CPU runs (scalar, AVX2, AVX-512: ``TreeEnsemble.kernel``) against XGBoost's C
predict (``NativeBooster``, one thread), on the Abalone model, for 1, 8, 64 and 2M rows; all
interleaved, the best of ``--repeats`` rounds each (process CPU time, so other people's load on
the machine disturbs it little). It also checks that each kernel agrees with XGBoost bit for bit.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model.tar.gz (default: train Abalone)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    directory = args.model.parent if args.model else Path(tempfile.mkdtemp())
    if not args.model:
        train = REPO / "examples" / "abalone" / "train.py"
        subprocess.run([sys.executable, str(train), "--output", str(directory)], check=True)
    tarball = args.model or directory / "model.tar.gz"
    native = NativeBooster(extract_member(tarball.read_bytes()))
    native.set_threads(1)
    ensemble = TreeEnsemble.of(native)
    kernels = [kernel for kernel in _trees.KERNELS if can_run(ensemble, kernel)]
    test_rows = np.loadtxt(directory / "test.csv", delimiter=",", dtype=np.float32)
    for size in SIZES:
        rows = np.resize(test_rows, (size, test_rows.shape[1]))
        if size == SIZES[-1]:  # one row in ten with a missing value, as real data has
            rows[::10, 3] = np.nan
        expected = native.predict(rows).view(np.uint32)
        same = {}
        for kernel in kernels:
            ensemble.kernel = kernel
            same[kernel] = np.array_equal(ensemble.predict(rows).view(np.uint32), expected)
        calls = max(1, 20_000 // size)
        ours: dict[str, list[float]] = {kernel: [] for kernel in kernels}
        theirs = []
        for _ in range(args.repeats):
            for kernel in kernels:
                ensemble.kernel = kernel
                ours[kernel].append(per_call(ensemble.predict, rows, calls))
            theirs.append(per_call(native.predict, rows, calls))
        xgboost = min(theirs)
        print(
            f"{size:>9} rows: XGBoost {xgboost * 1e6:10.1f} us ({xgboost / size * 1e9:7.1f} ns/row)"
        )
        for kernel in kernels:
            best = min(ours[kernel])
            print(
                f"{'':>15}{kernel:>7} {best * 1e6:10.1f} us ({best / size * 1e9:7.1f} ns/row),"
                f" {xgboost / best:5.2f}x XGBoost's speed, bitwise equal: {same[kernel]}"
            )


if __name__ == "__main__":
    main()
