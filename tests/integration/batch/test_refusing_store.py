"""A store that refuses deletes (as one that just failed a write may): the batch runner, run in
this process over file://, still ends with its summary. Cleaning up the parts of an object that
will not assemble used to raise out of the instance, which then exited without a summary and
was retried as if the failure were transient."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from infermodes.errors import StorageError
from infermodes.storage import Storage
from tests.conftest import AbaloneModel
from tests.support.batch import csv_text, run_in_process, sample_rows


class RefusingDeletes(Storage):
    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    def delete(self, uri: str) -> None:
        self.refused.append(uri)
        raise StorageError(f"cannot delete {uri}: the store is unavailable")


def test_a_failed_range_whose_parts_cannot_be_removed_still_ends_in_a_summary(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    rows = sample_rows(abalone_model.test_rows, 4_000, seed=3)
    (tmp_path / "in").mkdir()
    bad = b"1,2,3\n"  # first and last: whichever range this instance has fails
    (tmp_path / "in/a.csv").write_bytes(bad + csv_text(rows) + bad)
    storage = RefusingDeletes()
    summary = run_in_process(abalone_model.tarball, tmp_path, storage, CollectorRegistry(),
                             instance_index=0, instance_count=2, split_min_bytes=1)  # fmt: skip
    assert summary.state == "Failed"
    assert [(f.object, f.line) for f in summary.failures] == [
        (f"file://{tmp_path}/in/a.csv", len(rows) + 2)  # the larger range, the second, is ours
    ]
    assert storage.refused and all(".part-" in uri for uri in storage.refused)
