"""The async plane's sweep aborts incomplete multipart uploads that its own writers left, on a
real S3-compatible server: an endpoint's path may be the root of a bucket other programs
write to too, and their uploads (or those deeper in the bucket) are not ours to abort."""

from __future__ import annotations

import time
from typing import Any

from infermodes.gateway.async_retention import written_by_us
from infermodes.storage import S3Store, Storage
from tests.support.s3 import S3Endpoint


def test_only_uploads_of_our_names_directly_under_the_prefix_are_aborted(s3: S3Endpoint) -> None:
    client: Any = s3.client()
    client.create_bucket(Bucket="shared")
    storage = Storage(s3_store=S3Store(client))
    keys = ["dead.out", "dead.error", "report.csv", "team/other.out", "notes.out.bak"]
    for key in keys:
        client.create_multipart_upload(Bucket="shared", Key=key)
    assert storage.remove_partials("s3://shared/", time.time() + 60, written_by_us) == 2
    left = client.list_multipart_uploads(Bucket="shared").get("Uploads", [])
    assert sorted(u["Key"] for u in left) == ["notes.out.bak", "report.csv", "team/other.out"]
    assert storage.remove_partials("s3://shared/", time.time() - 3600, written_by_us) == 0


def test_the_sweep_lists_only_the_folder_itself(s3: S3Endpoint) -> None:
    """A bucket's root may be an endpoint's input path: the sweep lists its top level, not
    every key of the bucket."""
    client: Any = s3.client()
    client.create_bucket(Bucket="wide")
    storage = Storage(s3_store=S3Store(client))
    for key in ("in/a.in", "in/deep/b.in", "in/deep/er/c.in", "other.in"):
        storage.put_bytes(f"s3://wide/{key}", b"x")
    assert [uri for uri, _ in storage.list_folder_times("s3://wide/in/")] == ["s3://wide/in/a.in"]
    assert [uri for uri, _ in storage.list_folder_times("s3://wide/")] == ["s3://wide/other.in"]
