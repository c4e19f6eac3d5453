"""Cold start of a serverless endpoint under ``infermodes up``: the first request at zero
replicas until its response, against the floor of the same machine in the same run: a bare
``infermodes serve`` started by hand until its ``/ping`` answers (one process start plus the
model load, what a cold start cannot go below).

Each round deletes and re-applies the endpoint, so it is at zero again without waiting for its
idle timeout. Writes ``cold_start.json`` beside this file.

    .venv/bin/python bench/local/cold_start.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.local import manifest, running_up  # noqa: E402
from tests.support.processes import INFERMODES, running_server  # noqa: E402

ROW = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"


def bare_start(model: Path, folder: Path) -> float:
    """``infermodes serve --workers 1`` from exec to the first 200 on /ping."""
    started = time.perf_counter()
    with running_server(["--model", str(model), "--workers", "1"], folder / "serve.log"):
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        subprocess.run([sys.executable, str(REPO / "examples/abalone/train.py"), "--output",
                        str(folder / "model")], check=True, capture_output=True)  # fmt: skip
        model = folder / "model" / "model.tar.gz"
        path = manifest("serverless", model, folder, idleTimeoutSeconds=10)
        floor, cold = [], []
        with running_up(folder / "state", [], folder / "up.log") as up:
            client = httpx.Client(timeout=90.0)
            for _ in range(args.rounds):
                floor.append(bare_start(model, folder))
                subprocess.run([INFERMODES, "apply", "-f", str(path), "--url", up.url],
                               check=True, capture_output=True)  # fmt: skip
                started = time.perf_counter()
                answer = client.post(f"{up.url}/endpoints/abalone-serverless/invocations",
                                     content=ROW, headers={"content-type": "text/csv"})  # fmt: skip
                cold.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
                subprocess.run([INFERMODES, "delete", "abalone-serverless", "--url", up.url],
                               check=True, capture_output=True)  # fmt: skip
    result = {
        "rounds": args.rounds,
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
