"""Run ``infermodes batch`` as real processes (or its runner in this process) and check its
outputs against the booster."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from infermodes.metrics import BatchMetrics
from infermodes.predict.model import XGBoostModel
from infermodes.settings import BatchSettings
from infermodes.storage import Storage
from infermodes.workers.batch.runner import Runner
from infermodes.workers.batch.summary import Summary
from tests.support.processes import INFERMODES, REPO

FAULTS = REPO / "tests/support/faults"
RUN_TIMEOUT = 300.0


@dataclass(frozen=True)
class Finished:
    returncode: int
    log: str

    def summary_line(self) -> str:
        return self.log.strip().splitlines()[-1] if self.log.strip() else ""


def run_in_process(
    model: Path, folder: Path, storage: Storage, registry: CollectorRegistry, **settings: object
) -> Summary:
    """The batch runner over ``folder``/in into ``folder``/out in this process, as one instance
    runs it (``settings`` more of its settings), its metrics in ``registry``."""
    batch = BatchSettings(
        model_uri=str(model),
        input_uri=str(folder / "in"),
        output_uri=str(folder / "out"),
        metrics_port=0,
        **settings,  # the settings' own fields, checked as they load
    )
    loaded = XGBoostModel.load(batch.model_uri)
    return Runner(batch, storage, loaded, BatchMetrics(registry)).run()


def batch_command(model: Path, input_uri: str, output_uri: str, *args: str) -> list[str]:
    return [
        INFERMODES, "batch", "--model", str(model), "--input", input_uri, "--output", output_uri,
        "--metrics-port", "0", *args,
    ]  # fmt: skip


def start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[bytes]) -> Finished:
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(
            f"infermodes batch ran over {RUN_TIMEOUT} s:\n{out.decode()}"
        ) from None
    return Finished(proc.returncode, out.decode(errors="replace"))


def run(command: list[str], env: dict[str, str] | None = None) -> Finished:
    return finish(start(command, env))


def run_instances(commands: list[list[str]], env: dict[str, str] | None = None) -> list[Finished]:
    """Several instances at once, as an Indexed Job runs them."""
    procs = [start(command, env) for command in commands]
    try:
        return [finish(proc) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def with_faults(failing_predicts: int) -> dict[str, str]:
    """Environment that makes the first predictions of the process fail (``faults/``)."""
    path = os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "INFERMODES_TEST_FAILING_PREDICTS": str(failing_predicts)}


def sample_rows(base: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` rows like ``base`` (resampled, measurements jittered), as float32."""
    rng = np.random.default_rng(seed)
    rows = base[rng.integers(0, len(base), count)].astype(np.float64)
    rows[:, 3:] *= rng.uniform(0.9, 1.1, size=rows[:, 3:].shape)
    return rows.astype(np.float32)


def csv_text(rows: np.ndarray) -> bytes:
    return "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in rows.tolist()).encode()


def expected_scores(booster: object, text: bytes) -> np.ndarray:
    """The booster's predictions for CSV text, parsed as float32 as the server parses it."""
    from io import BytesIO

    rows = np.loadtxt(BytesIO(text), delimiter=",", dtype=np.float32, ndmin=2)
    return np.asarray(booster.inplace_predict(rows), dtype=np.float32)


def scores_of(out: bytes) -> np.ndarray:
    """A CSV ``.out``: one prediction per line, as float32."""
    return np.array([float(line) for line in out.splitlines()], dtype=np.float32)


def summaries(documents: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(document) for document in documents]
