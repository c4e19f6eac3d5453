"""Peak memory of a worker writing a 1 GB output to ``s3://``, beside the same to ``file://``.

A real ``infermodes worker`` scores a CSV input (by reference, ``file://``) whose JSON output
is about ``--output-bytes``, once into an endpoint on local files and once into one whose
outputs live on an S3-compatible server (moto's, in its own process on loopback, so its memory
is not the worker's). The worker's peak RSS is the kernel's high-water mark (``VmHWM``),
against its RSS after loading the model.

Run from the repository root: ``.venv/bin/python bench/async/s3_output_memory.py`` (~10 minutes
on 2 shared cores for 1 GB); it prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
import httpx  # noqa: E402

from tests.support.abalone import trained_abalone  # noqa: E402
from tests.support.async_plane import Notifications, plane  # noqa: E402
from tests.support.processes import free_port, stop_process, wait_until  # noqa: E402
from tests.support.rabbitmq import Broker, rabbitmq_broker  # noqa: E402

ROW = b"0,0,0,0,0,0,0,0,0,0\n"  # the shortest row: the output outgrows the input
JSON_BYTES_PER_ROW = len(b'{"score": 9.876543045043945}, ')  # about what JSON writes per row


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-bytes", type=int, default=1 << 30)
    args = parser.parse_args()
    with trained_abalone("infermodes-s3-memory-") as root:
        rows = args.output_bytes // JSON_BYTES_PER_ROW + 1
        source = root / "big.csv"
        block = ROW * 100_000
        with source.open("wb") as out:
            for _ in range(rows // 100_000 + 1):
                out.write(block)
        port = free_port()
        s3 = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        env = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        try:
            wait_until(lambda: _up(url), 60, "the S3 server")
            client = boto3.client("s3", endpoint_url=url, **_credentials(env))
            client.create_bucket(Bucket="bench")
            with rabbitmq_broker() as broker:
                figures = {
                    "file": measure(broker, root, source, f"file://{root}/out", {}),
                    "s3": measure(broker, root, source, "s3://bench/out", env),
                }
            head = client.head_object(Bucket="bench", Key="out/output/big.out")
            figures["s3"]["output_bytes"] = head["ContentLength"]
            figures["file"]["output_bytes"] = (root / "out/output/big.out").stat().st_size
            print(
                json.dumps(
                    {
                        "input_bytes": source.stat().st_size,
                        "rows": rows,
                        **figures,
                        "load_average": os.getloadavg(),
                    },
                    indent=1,
                )
            )
        finally:
            stop_process(s3)


def measure(
    broker: Broker, root: Path, source: Path, prefix: str, env: dict[str, str]
) -> dict[str, float]:
    """One worker scores ``source`` into ``prefix`` (JSON out); its memory and time."""
    endpoint = "s3" if prefix.startswith("s3") else "file"
    notes = Notifications(broker, endpoint).declare()
    folder = root / endpoint
    folder.mkdir()
    with plane(broker, endpoint, prefix, folder, env) as live:
        worker = live.start_worker(f"file://{root / 'model.tar.gz'}", "w", concurrency=1)
        baseline = kib(worker.proc.pid, "VmRSS")
        began = time.perf_counter()
        response = live.invoke(
            headers={
                "X-Amzn-SageMaker-InputLocation": f"file://{source}",
                "X-Amzn-SageMaker-Inference-Id": "big",
                "X-Amzn-SageMaker-InvocationTimeoutSeconds": "3600",
                "accept": "application/json",
            }
        )
        response.raise_for_status()
        notes.wait_for({"big"}, "Completed", 3600)
        took = time.perf_counter() - began
        peak = kib(worker.proc.pid, "VmHWM")
    return {
        "seconds": round(took, 1),
        "worker_rss_after_model_load_mib": round(baseline / 1024, 1),
        "worker_peak_rss_mib": round(peak / 1024, 1),
        "growth_mib": round((peak - baseline) / 1024, 1),
    }


def _credentials(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def _up(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


if __name__ == "__main__":
    main()
