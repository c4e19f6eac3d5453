"""Fixtures of the batch tests: a real S3 store (SeaweedFS) for the session, a bucket each."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.support.s3 import S3Endpoint
from tests.support.seaweedfs import seaweedfs_server

_buckets = itertools.count()


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[S3Endpoint]:
    with seaweedfs_server() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(seaweedfs: S3Endpoint) -> str:
    name = f"batch-{next(_buckets):03d}"
    seaweedfs.client().create_bucket(Bucket=name)
    return name
