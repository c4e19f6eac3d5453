"""scripts/quickstart.sh run non-interactively (QUICKSTART_ONCE=1) in a copy of the examples:
every mode answers through ``infermodes up`` and nothing is left running. The install step is
the project's ``scripts/install.sh`` into this test's own ``.venv`` (a link to the running one),
replaced by a no-op here: it would reinstall the package the whole suite runs from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import AbaloneModel
from tests.support.processes import REPO, free_port

ROW = [1, 0, 0, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]


def test_the_quickstart_runs_every_mode_and_stops_everything(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "quickstart.sh", tmp_path / "scripts")
    (tmp_path / "scripts" / "install.sh").write_text("#!/usr/bin/env bash\n")
    (tmp_path / "scripts" / "install.sh").chmod(0o755)
    shutil.copytree(REPO / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("model"))  # fmt: skip
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    port = free_port()
    result = subprocess.run(
        [str(tmp_path / "scripts" / "quickstart.sh")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "QUICKSTART_ONCE": "1", "PORT": str(port)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split(":", 1)[0].strip(): line for line in result.stdout.splitlines()}
    trained = AbaloneModel(tmp_path / "examples" / "abalone" / "model")  # by the script
    expected = trained.booster().inplace_predict(np.array([ROW], "f4"))  # type: ignore[attr-defined]
    for mode in ("realtime", "serverless"):
        got = float(lines[mode].split(":", 1)[1].split()[0])
        np.testing.assert_allclose(got, expected[0], rtol=1e-5)
    assert float(lines["output"].split(":", 1)[1]) == float(lines["serverless"].split()[1])
    assert "Completed" in lines["batch"] and "4/4" in lines["batch"]
    assert lines["outputs"].split(":", 1)[1].split() == [f"part-{i}.csv.out" for i in range(4)]
    assert f"http://127.0.0.1:{port}" in result.stdout
    assert json.loads((tmp_path / ".infermodes" / "children.json").read_text()) == []
