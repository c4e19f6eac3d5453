"""What every ``infermodes`` process sets in its environment before it imports numpy or
pydantic (``cli.LEAN_START_ENV``): given values win."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from infermodes.cli import LEAN_START_ENV, main


def test_the_lean_start_environment_is_set_unless_the_user_set_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in LEAN_START_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    result = CliRunner().invoke(main, ["batch", "--help"])
    assert result.exit_code == 0, result.output
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
