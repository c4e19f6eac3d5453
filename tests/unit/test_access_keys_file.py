"""The gateway's access keys in a file (the chart mounts ``gateway.auth.secretRef``): followed
as the file changes, looked at no more than once a second, never shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from infermodes.gateway.auth import KEYS_LOOK_SECONDS, AccessKeysFile, access_keys
from infermodes.settings import GatewaySettings


def test_the_file_is_read_again_when_it_changed_and_looked_at_once_a_second(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys"
    path.write_text("AKIAFIRST:first-secret\n")
    clock = [100.0]
    keys = AccessKeysFile(path, lambda: clock[0])
    assert keys() == {"AKIAFIRST": "first-secret"}
    replaced = tmp_path / "next"
    replaced.write_text("AKIAFIRST:first-secret,AKIASECOND:second-secret")
    replaced.replace(path)  # as the kubelet swaps a Secret's files
    assert keys() == {"AKIAFIRST": "first-secret"}  # not looked at within the second
    clock[0] += KEYS_LOOK_SECONDS
    assert keys() == {"AKIAFIRST": "first-secret", "AKIASECOND": "second-secret"}
    path.write_text("AKIASECOND:second-secret")  # the first revoked
    clock[0] += KEYS_LOOK_SECONDS
    assert keys() == {"AKIASECOND": "second-secret"}
    path.write_text("")  # none left: every request is refused, not an open gateway
    clock[0] += KEYS_LOOK_SECONDS
    assert keys() == {}
    assert "first-secret" not in caplog.text and "second-secret" not in caplog.text


@pytest.mark.parametrize("change", [b"AKIABAD", b"\xff\xfe", b"AKIAX:x,AKIAX:y", None], ids=str)
def test_a_change_that_cannot_be_read_keeps_the_keys_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: bytes | None
) -> None:
    path = tmp_path / "keys"
    path.write_text("AKIAKEPT:kept-secret")
    clock = [0.0]
    keys = AccessKeysFile(path, lambda: clock[0])
    if change is None:
        path.unlink()  # a Secret deleted
    else:
        path.write_bytes(change)
    caplog.set_level(logging.ERROR, "infermodes.gateway")
    for _ in range(3):
        clock[0] += KEYS_LOOK_SECONDS
        assert keys() == {"AKIAKEPT": "kept-secret"}
    refusals = [r for r in caplog.records if "the 1 read before stay" in r.getMessage()]
    assert len(refusals) == 1 and str(path) in refusals[0].getMessage()
    assert "kept-secret" not in caplog.text and "AKIAX:" not in caplog.text


def test_a_file_that_cannot_be_read_at_start_stops_the_gateway_and_not_both(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=f"cannot read {tmp_path / 'absent'}"):
        access_keys(GatewaySettings(access_keys_file=str(tmp_path / "absent")))
    (tmp_path / "bad").write_text("AKIAONLY")
    with pytest.raises(ValueError, match="access key entry 1 must be"):
        access_keys(GatewaySettings(access_keys_file=str(tmp_path / "bad")))
    with pytest.raises(ValueError, match="access_keys and access_keys_file are both set"):
        GatewaySettings(access_keys="AKIAX:y", access_keys_file=str(tmp_path / "bad"))
    (tmp_path / "empty").write_text("")
    closed = access_keys(GatewaySettings(access_keys_file=str(tmp_path / "empty")))
    assert closed is not None and closed() == {}  # given a file, never open
    assert access_keys(GatewaySettings()) is None  # no keys at all: open
