"""Mistakes a user makes on the command line of the ``up`` CLI end with a message naming
the problem and a non-zero exit code, not a traceback, and before any request is sent."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from infermodes.cli import main

NOWHERE = "http://127.0.0.1:1"  # nothing listens: these mistakes are caught before a request


def test_invoke_with_a_data_file_that_does_not_exist_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "rows.csv"
    result = CliRunner().invoke(main, ["invoke", "abalone", "--data", f"@{missing}",
                                       "--url", NOWHERE])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not a FileNotFoundError's traceback
    assert str(missing) in result.output and "--data" in result.output


def test_apply_of_a_folder_without_manifests_says_so(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "realtime.yaml").write_text("kind: InferenceEndpoint\n")
    (tmp_path / "notes.txt").write_text("not a manifest\n")
    result = CliRunner().invoke(main, ["apply", "-f", str(tmp_path), "--url", NOWHERE])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"{tmp_path}: no .yaml, .yml or .json file in it" in result.output
