"""Cold start of a serverless endpoint under ``infermodes up``: the first request at zero
replicas until its response, against the floor of the same machine in the same run: a bare
``infermodes serve`` started by hand until its ``/ping`` answers (one process start plus the
model load, what a cold start cannot go below). Each cold start is split by the logs' times
(milliseconds, from the request): the model server started by the supervisor, listening, its
model loaded, and the response.

Each round applies an endpoint of a new name (checked to be at zero) and deletes it after.
Writes ``cold_start.json`` beside this file.

    .venv/bin/python bench/local/cold_start.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.local import document, running_up  # noqa: E402
from tests.support.processes import INFERMODES, running_server  # noqa: E402

ROW = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"
# the log lines that mark each phase of a cold start, in order
PHASES = {
    "started": re.compile(r"/server-\d+ started"),
    "listening": re.compile(r"infermodes\.serve: listening on"),
    "loaded": re.compile(r"infermodes\.serve: model .* loaded"),
}
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def logged_at(line: str) -> float | None:
    """The wall-clock time of a log line (the logs' format: local time, milliseconds)."""
    found = LOG_TIME.match(line)
    if found is None:
        return None
    stamp = time.mktime(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S"))
    return stamp + int(found.group(2)) / 1000


def phases(logs: list[Path], since: float) -> dict[str, float]:
    """Seconds from ``since`` to the first line after it of each phase, in any of ``logs``."""
    found: dict[str, float] = {}
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            at = logged_at(line)
            if at is None or at < since - 0.001:
                continue
            for phase, pattern in PHASES.items():
                if phase not in found and pattern.search(line):
                    found[phase] = round(at - since, 3)
    return found


def bare_start(model: Path, folder: Path) -> float:
    """``infermodes serve --workers 1`` from exec to the first 200 on /ping."""
    started = time.perf_counter()
    with running_server(["--model", str(model), "--workers", "1"], folder / "serve.log"):
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        subprocess.run([sys.executable, str(REPO / "examples/abalone/train.py"), "--output",
                        str(folder / "model")], check=True, capture_output=True)  # fmt: skip
        model = folder / "model" / "model.tar.gz"
        floor, cold, split = [], [], []
        with running_up(folder / "state", [], folder / "up.log") as up:
            client = httpx.Client(timeout=90.0)
            for index in range(args.rounds):
                floor.append(bare_start(model, folder))
                name = f"serverless-{index}"
                endpoint = document("serverless", model, folder, idleTimeoutSeconds=10)
                endpoint["metadata"]["name"] = name
                path = folder / f"{name}.yaml"
                path.write_text(yaml.safe_dump(endpoint))
                subprocess.run([INFERMODES, "apply", "-f", str(path)], env=up.cli_env,
                               check=True, capture_output=True)  # fmt: skip
                assert up.status(name)["replicas"] == 0, up.status(name)
                started, wall = time.perf_counter(), time.time()
                answer = client.post(f"{up.url}/endpoints/{name}/invocations",
                                     content=ROW, headers={"content-type": "text/csv"})  # fmt: skip
                cold.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
                logs = [up.log_path, *up.state_dir.glob(f"logs/{name}/*.log")]
                split.append({**phases(logs, wall), "response": round(cold[-1], 3)})
                subprocess.run([INFERMODES, "delete", name, "--url", up.url],
                               check=True, capture_output=True)  # fmt: skip
    result = {
        "rounds": args.rounds,
        "load_average_at_start_and_end": [load_at_start, os.getloadavg()[0]],
        "phases_seconds": split,
        "cold_start_seconds": cold,
        "bare_serve_start_seconds": floor,
        "cold_start_median": statistics.median(cold),
        "bare_serve_start_median": statistics.median(floor),
        "ratio_median": statistics.median(cold) / statistics.median(floor),
    }
    (Path(__file__).parent / "cold_start.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
