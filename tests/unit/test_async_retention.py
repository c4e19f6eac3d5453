"""What the retention sweep removes (stale inline inputs, request records and partial writes
of the async plane's own) and what it never touches (outputs, errors, the caller's files)."""

import logging
import os
from pathlib import Path

import pytest

from infermodes.gateway.async_retention import (
    INLINE_INPUT_MAX_AGE,
    PARTIAL_MAX_AGE,
    RECORD_MAX_AGE,
    Sweeper,
    sweep,
)
from infermodes.settings import AsyncEndpoint
from infermodes.storage import Storage, StorageError

NOW = 1_000_000_000.0


def touch(path: Path, age: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (NOW - age, NOW - age))
    return path


@pytest.mark.parametrize("scheme", ["file://", "FILE://", "file://localhost"])
def test_sweep_removes_only_stale_objects_of_our_own(tmp_path: Path, scheme: str) -> None:
    """Whichever way the spec spells the endpoint's path."""
    endpoint = AsyncEndpoint.under(f"{scheme}{tmp_path}")
    gone = [
        touch(tmp_path / "input/old.in", INLINE_INPUT_MAX_AGE + 1),
        touch(tmp_path / "input/old.request", RECORD_MAX_AGE + 1),
        touch(tmp_path / "input/old.result", RECORD_MAX_AGE + 1),
        touch(tmp_path / "output/.dead.out.k2j3.partial", PARTIAL_MAX_AGE + 1),
        touch(tmp_path / "failure/.dead.error.x9.partial", PARTIAL_MAX_AGE + 1),
        touch(tmp_path / "input/.late.in.q1.partial", PARTIAL_MAX_AGE + 1),
    ]
    kept = [
        touch(tmp_path / "input/young.in", INLINE_INPUT_MAX_AGE - 60),
        touch(tmp_path / "input/young.request", RECORD_MAX_AGE - 60),
        touch(tmp_path / "input/young.result", RECORD_MAX_AGE - 60),
        touch(tmp_path / "input/users/own.in", 10 * RECORD_MAX_AGE),  # not ours: nested
        touch(tmp_path / "input/rows.csv", 10 * RECORD_MAX_AGE),  # not ours: another name
        touch(tmp_path / "input/not an id.in", 10 * RECORD_MAX_AGE),
        touch(tmp_path / "output/old.out", 10 * RECORD_MAX_AGE),
        touch(tmp_path / "failure/old.error", 10 * RECORD_MAX_AGE),
        touch(tmp_path / "output/.writing.out.k7.partial", PARTIAL_MAX_AGE - 60),
        # another writer's, in a folder the endpoint shares: not ours to remove
        touch(tmp_path / "output/.report.csv.k8.partial", 10 * RECORD_MAX_AGE),
        touch(tmp_path / "output/team/.dead.out.k9.partial", 10 * RECORD_MAX_AGE),
    ]
    assert sweep(Storage(), endpoint, NOW) == len(gone)
    assert [p for p in gone if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []


def test_an_object_that_cannot_be_removed_stops_no_other_and_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal to remove one file (EACCES from a folder the sweep may not write) reached the
    sweeper as a bare OSError and ended its thread for every endpoint; it is a storage error
    now, raised once the rest is removed."""
    endpoint = AsyncEndpoint.under(f"file://{tmp_path}")
    stuck = touch(tmp_path / "input/a-stuck.request", RECORD_MAX_AGE + 1)
    stuck_partial = touch(tmp_path / "output/.a.out.k1.partial", PARTIAL_MAX_AGE + 1)
    gone = [touch(tmp_path / "input/b-old.request", RECORD_MAX_AGE + 1),
            touch(tmp_path / "output/.b.out.k2.partial", PARTIAL_MAX_AGE + 1)]  # fmt: skip
    unlink = os.unlink

    def refusing(path: str) -> None:
        if path in (str(stuck), str(stuck_partial)):
            raise PermissionError(13, "Permission denied")
        unlink(path)

    monkeypatch.setattr(os, "unlink", refusing)
    with pytest.raises(StorageError) as raised:
        sweep(Storage(), endpoint, NOW)
    assert str(raised.value) == (
        f"some stale objects were left: cannot delete file://{stuck}: Permission denied "
        "(and 1 more)"
    )
    assert [p for p in gone if p.exists()] == []
    assert stuck.exists() and stuck_partial.exists()


def test_a_failing_sweep_is_one_warning_and_the_next_tries_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "infermodes.async_api")
    broken = AsyncEndpoint.under("gs://bucket")  # every call fails
    fine = AsyncEndpoint.under(f"file://{tmp_path}")
    touch(tmp_path / "input/old.in", INLINE_INPUT_MAX_AGE + 1)
    sweeper = Sweeper(Storage(), {"broken": broken, "fine": fine}, 0, clock=lambda: NOW)
    sweeper.sweep_all()
    assert [r.getMessage()[:32] for r in caplog.records] == [
        "retention sweep of broken failed",
        "retention sweep of fine: removed",
    ]
    assert not (tmp_path / "input/old.in").exists()
