"""Every float32 in a range of binades, written by the native formatter and by Python's repr:
the bytes must be equal (the tests check random bit patterns; this checks every value).

    .venv/bin/python bench/batch/exact.py [--low -20] [--high 24]   # binades 2**low .. 2**high

Both signs are covered by writing each value and its negation. ~5 s per binade on one core.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from infermodes.predict import codecs, fastcsv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--low", type=int, default=-20)
    parser.add_argument("--high", type=int, default=24)
    args = parser.parse_args()
    if not fastcsv.AVAILABLE:
        sys.exit("the native module is not built: run scripts/install.sh")
    first = int(np.array([2.0**args.low], np.float32).view(np.uint32)[0])
    last = int(np.array([2.0**args.high], np.float32).view(np.uint32)[0])
    started, checked, step = time.monotonic(), 0, 1 << 20
    for start in range(first, last, step):
        bits = np.arange(start, min(start + step, last), dtype=np.uint32)
        values = bits.view(np.float32)
        values = np.concatenate([values, -values])
        if fastcsv.encode(values, codecs.CSV) != codecs.encode(values, codecs.CSV):
            sys.exit(f"MISMATCH in the float32 bit patterns {start:#x}..{start + step:#x}")
        checked += len(values)
    print(f"{checked:,} float32 values in [2**{args.low}, 2**{args.high}) and their negations: "
          f"the same bytes as repr ({time.monotonic() - started:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
