"""The seed notebook's cold- vs warm-start figure, measured the way the notebook measures it:
the wall time of boto3's ``invoke_endpoint`` (one CSV row, ``text/csv``) on a serverless
endpoint made with ``create_model`` / ``create_endpoint_config`` (``ServerlessConfig``) /
``create_endpoint``. Cold: the first invoke of a fresh endpoint (no replica yet: it starts while
the request is held); warm: the invokes after it. Each round creates a fresh endpoint, times
its first invoke and ``--warms`` more, and deletes it.

Targets:
- no ``--endpoint-url``: the script starts its own S3 server (SeaweedFS) and ``infermodes up``,
  trains the Abalone example model and uploads it;
- ``--endpoint-url URL --model-url s3://...``: an ``up`` or a gateway already running, with the
  model already where its replicas read it (``--access-key``/``--secret-key`` sign requests).

    flock /tmp/infermodes-bench.lock .venv/bin/python bench/platform/cold_warm.py --label up
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

RESULTS = Path(__file__).with_name("results.json")
ROW = b"0.0,0.0,1.0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15\n"  # one Abalone row (an infant)


@contextlib.contextmanager
def own_target(state: Path) -> Iterator[tuple[str, str, str, str]]:
    """SeaweedFS + ``infermodes up`` on loopback, the example model uploaded: (URL, model
    URL, access key id, secret: ``up``'s token)."""
    from infermodes.local.access import ACCESS_KEY_ID, read_token
    from tests.support.abalone import train_abalone
    from tests.support.local import running_up
    from tests.support.seaweedfs import seaweedfs_server

    train_abalone(state / "model")
    with seaweedfs_server() as s3, mock.patch.dict(os.environ, s3.env):
        storage: Any = s3.client()
        storage.create_bucket(Bucket="models")
        storage.upload_file(str(state / "model" / "model.tar.gz"), "models", "model.tar.gz")
        with running_up(state / "up", [], state / "up.log") as up:
            yield up.url, "s3://models/model.tar.gz", ACCESS_KEY_ID, read_token(up.token_file)


def clients(url: str, region: str, key: str, secret: str) -> tuple[Any, Any]:
    import boto3

    made = [boto3.client(service, endpoint_url=url, region_name=region, aws_access_key_id=key,
                         aws_secret_access_key=secret)
            for service in ("sagemaker", "sagemaker-runtime")]  # fmt: skip
    return made[0], made[1]


def timed_invoke(runtime: Any, name: str) -> float:
    started = time.perf_counter()
    answer = runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=ROW)
    answer["Body"].read()
    return time.perf_counter() - started


def measure(url: str, model_url: str, args: argparse.Namespace) -> dict[str, Any]:
    sagemaker, runtime = clients(url, args.region, args.access_key, args.secret_key)
    suffix = uuid.uuid4().hex[:6]
    model, config = f"bench-model-{suffix}", f"bench-config-{suffix}"
    sagemaker.create_model(ModelName=model, PrimaryContainer={"ModelDataUrl": model_url})
    sagemaker.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": model,
         "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}])  # fmt: skip
    cold: list[float] = []
    warm: list[float] = []
    try:
        for round_ in range(args.rounds):
            name = f"bench-{suffix}-{round_}"
            sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config)
            try:
                sagemaker.get_waiter("endpoint_in_service").wait(
                    EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 300}
                )
                cold.append(timed_invoke(runtime, name))
                warm.extend(timed_invoke(runtime, name) for _ in range(args.warms))
            finally:
                sagemaker.delete_endpoint(EndpointName=name)
            print(f"round {round_}: cold {cold[-1] * 1000:.0f} ms, warm median "
                  f"{statistics.median(warm[-args.warms:]) * 1000:.1f} ms", flush=True)  # fmt: skip
    finally:
        sagemaker.delete_endpoint_config(EndpointConfigName=config)
        sagemaker.delete_model(ModelName=model)
    return {
        "rounds": args.rounds,
        "warm_invokes_per_round": args.warms,
        "cold_ms": {"median": round(statistics.median(cold) * 1000, 1),
                    "min": round(min(cold) * 1000, 1), "max": round(max(cold) * 1000, 1)},
        "warm_ms": {"median": round(statistics.median(warm) * 1000, 2),
                    "p90": round(sorted(warm)[int(len(warm) * 0.9)] * 1000, 2)},
        "load_average": os.getloadavg(),
        "managed_platform_ms": {"cold": 288, "warm": 71},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint-url", help="a running up or gateway (default: start up)")
    parser.add_argument("--model-url", help="the model.tar.gz its replicas read (with a URL)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--access-key", default="x")
    parser.add_argument("--secret-key", default="x")
    parser.add_argument("--rounds", type=int, default=5, help="fresh endpoints (cold starts)")
    parser.add_argument("--warms", type=int, default=20, help="warm invokes per endpoint")
    parser.add_argument("--label", default="up", help="the key of this run in results.json")
    args = parser.parse_args()
    if args.endpoint_url and not args.model_url:
        parser.error("--endpoint-url needs --model-url")
    load = os.getloadavg()
    with contextlib.ExitStack() as stack:
        if args.endpoint_url:
            url, model_url = args.endpoint_url, args.model_url
        else:
            state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-platform-")))
            url, model_url, args.access_key, args.secret_key = stack.enter_context(
                own_target(state)
            )
        result = measure(url, model_url, args)
    result["load_average_at_start"] = load
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.label] = result
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
