"""Fixtures shared by every test tier."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support.abalone import train_abalone
from tests.support.s3 import S3Endpoint, s3_server

pytest_plugins = ["tests.cluster.plugin"]

# An S3 client without credentials asks the EC2 metadata address (169.254.169.254) for some:
# tests reach loopback only, and every process they start inherits this
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


@dataclass(frozen=True)
class AbaloneModel:
    """The example's trained model and held-out rows, written by the example script itself."""

    directory: Path

    @property
    def tarball(self) -> Path:
        return self.directory / "model.tar.gz"

    @property
    def test_rows(self) -> np.ndarray:
        return np.loadtxt(self.directory / "test.csv", delimiter=",", dtype=np.float32)

    def booster(self) -> object:
        """The booster loaded by the xgboost package itself: the oracle for predictions."""
        import xgboost

        from infermodes.predict.artifacts import extract_member

        booster = xgboost.Booster()
        booster.load_model(bytearray(extract_member(self.tarball.read_bytes())))
        return booster


@pytest.fixture(scope="session")
def abalone_model(tmp_path_factory: pytest.TempPathFactory) -> AbaloneModel:
    return AbaloneModel(train_abalone(tmp_path_factory.mktemp("abalone")))


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Endpoint]:
    with s3_server() as endpoint:
        yield endpoint
