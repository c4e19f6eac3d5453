"""The example's Abalone model, trained by the example script itself: for tests and benchmarks
alike (``model.tar.gz`` and the held-out ``test.csv``)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import REPO


def train_abalone(directory: Path) -> Path:
    """Write the example's ``model.tar.gz`` and ``test.csv`` into ``directory``."""
    subprocess.run(
        [sys.executable, str(REPO / "examples/abalone/train.py"), "--output", str(directory)],
        check=True,
        capture_output=True,
    )
    return directory


@contextmanager
def trained_abalone(prefix: str) -> Iterator[Path]:
    """A temporary directory holding a freshly trained model, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield train_abalone(Path(tmp))
