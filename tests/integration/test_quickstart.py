"""scripts/quickstart.sh run non-interactively (QUICKSTART_ONCE=1) in a fresh ``git clone`` of
this checkout's HEAD, as a user runs it: ``scripts/install.sh`` creates the clone's own
``.venv`` (pip's cache makes that about 40 s instead of minutes; the index is still asked),
trains the example, and every mode answers through ``infermodes up``; nothing is left running.
Uncommitted changes are not in the clone: the test checks what was committed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import AbaloneModel
from tests.support.processes import REPO, free_port

ROW = [1, 0, 0, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]


def test_the_quickstart_from_a_fresh_clone_runs_every_mode_and_stops_everything(
    tmp_path: Path,
) -> None:
    clone = tmp_path / "infermodes"
    cloned = subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert cloned.returncode == 0, cloned.stderr
    # the suite's own virtualenv must not leak into the clone's install
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(
        part for part in env["PATH"].split(os.pathsep) if Path(part) != Path(sys.prefix) / "bin"
    )
    port = free_port()
    result = subprocess.run(
        [str(clone / "scripts" / "quickstart.sh")],
        cwd=clone, capture_output=True, text=True, timeout=900,
        env={**env, "QUICKSTART_ONCE": "1", "PORT": str(port)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split(":", 1)[0].strip(): line for line in result.stdout.splitlines()}
    trained = AbaloneModel(clone / "examples" / "abalone" / "model")  # by the script
    expected = trained.booster().inplace_predict(np.array([ROW], "f4"))  # type: ignore[attr-defined]
    for mode in ("realtime", "serverless"):
        got = float(lines[mode].split(":", 1)[1].split()[0])
        np.testing.assert_allclose(got, expected[0], rtol=1e-5)
    assert float(lines["output"].split(":", 1)[1]) == float(lines["serverless"].split()[1])
    assert "Completed" in lines["batch"] and "4/4" in lines["batch"]
    assert lines["outputs"].split(":", 1)[1].split() == [f"part-{i}.csv.out" for i in range(4)]
    assert f"http://127.0.0.1:{port}" in result.stdout
    assert json.loads((clone / ".infermodes" / "children.json").read_text())["children"] == []
    assert (clone / ".venv" / "bin" / "infermodes").exists()  # installed by the script
