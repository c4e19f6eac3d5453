"""What a request's result claim costs a worker (``<inputPath>/<id>.result``, see docs/async.md).

1. ``file://``: the worker's ``Processor`` (read, predict, write with fsync, remove the inline
   input) on one-row requests, 4 threads as a worker's 4 invocations, with and without a claim
   location in the messages, alternated in pairs in one process so that the host's drift
   touches both alike; the claim's cost is the paired difference in CPU per message.
2. ``s3://`` (a SeaweedFS server on loopback, the test suite's): a claim is one conditional PUT;
   beside it, the PUT of one row's output and a HEAD, the calls a worker already makes.

    flock /tmp/infermodes-bench.lock .venv/bin/python bench/async/claim_cost.py   # ~3 minutes
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from prometheus_client import CollectorRegistry  # noqa: E402
from worker_cost import NoNotifier, one_row_requests  # noqa: E402

from infermodes.metrics import WorkerMetrics  # noqa: E402
from infermodes.settings import WorkerSettings  # noqa: E402
from infermodes.storage import Storage  # noqa: E402
from infermodes.workers.async_worker import Processor  # noqa: E402
from tests.support.seaweedfs import seaweedfs_server  # noqa: E402
from tests.unit.async_samples import tiny_model  # noqa: E402

CONCURRENCY = 4


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def processor_run(claim: bool, messages: int) -> tuple[float, float]:
    """CPU-ms and wall-ms per message of ``messages`` one-row requests in a fresh folder."""
    root = Path(tempfile.mkdtemp(prefix="claim-cost-"))
    bodies = one_row_requests(root, b"1,2,3\n", messages, claim)
    settings = WorkerSettings(endpoint="cost", model_uri="unused")
    metrics = WorkerMetrics(CollectorRegistry())
    processor = Processor(
        settings, tiny_model(1), Storage(), NoNotifier(), metrics, threading.Event()
    )
    cpu, began = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(lambda body: processor.handle(body, 0), bodies))
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - began
    shutil.rmtree(root)
    return cpu * 1000 / messages, wall * 1000 / messages


def file_claims(pairs: int, messages: int) -> dict[str, object]:
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for pair in range(pairs):
        for claim in (False, True) if pair % 2 == 0 else (True, False):
            runs[claim].append(processor_run(claim, messages))
    differences = [c[0] - n[0] for c, n in zip(runs[True], runs[False], strict=True)]
    return {
        "messages_per_run": messages,
        "pairs": pairs,
        "cpu_ms_per_message_without": [round(cpu, 3) for cpu, _ in runs[False]],
        "cpu_ms_per_message_with": [round(cpu, 3) for cpu, _ in runs[True]],
        "median_cpu_ms_without": round(statistics.median(c for c, _ in runs[False]), 3),
        "median_cpu_ms_with": round(statistics.median(c for c, _ in runs[True]), 3),
        "median_wall_ms_without": round(statistics.median(w for _, w in runs[False]), 3),
        "median_wall_ms_with": round(statistics.median(w for _, w in runs[True]), 3),
        "claim_cpu_ms_paired_median": round(statistics.median(differences), 3),
        "claim_cpu_ms_paired_all": sorted(round(d, 3) for d in differences),
    }


def s3_calls(calls: int, repeats: int) -> list[dict[str, object]]:
    results = []
    with seaweedfs_server() as endpoint:
        os.environ.update(endpoint.env)
        import boto3

        boto3.client("s3").create_bucket(Bucket="claims")
        storage = Storage()
        storage.put_bytes("s3://claims/warm", b"x")
        shapes: dict[str, Callable[[int, int], object]] = {
            "claim: conditional PUT, empty": lambda r, i: storage.create(
                f"s3://claims/{r}/{i}.result", b"", durable=False
            ),
            "output: PUT of one row's result": lambda r, i: storage.put_bytes(
                f"s3://claims/{r}/{i}.out", b"9.87\n"
            ),
            "HEAD of that output": lambda r, i: storage.exists(f"s3://claims/{r}/{i}.out"),
        }
        for repeat in range(repeats):
            for shape, call in shapes.items():
                cpu, began = cpu_seconds(), time.perf_counter()
                for index in range(calls):
                    call(repeat, index)
                results.append({
                    "shape": shape,
                    "cpu_ms_per_call": round((cpu_seconds() - cpu) * 1000 / calls, 3),
                    "wall_ms_per_call": round((time.perf_counter() - began) * 1000 / calls, 3),
                })  # fmt: skip
                print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--s3-calls", type=int, default=400)
    parser.add_argument("--out", type=Path, default=HERE / "claim_cost_results.json")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    files = file_claims(args.pairs, args.messages)
    print(json.dumps(files), flush=True)
    results = {"file": files, "s3": s3_calls(args.s3_calls, 3)}
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
