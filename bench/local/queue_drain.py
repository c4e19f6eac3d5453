"""Benchmark the embedded queue (SQLite) against RabbitMQ on this machine, in one run.

1. drain rate: the queue is filled while N worker processes are paused (SIGSTOP), then they
   resume; messages/s from the resume to the last delivery handled, with a trivial handler
   (ack at once) and with the real per-message path (``Processor``: read the input, predict,
   write the output, notify). Workers are ``tests/support/queue_worker.py`` on both brokers:
   the same code through ``broker_from_url``, only the URL differs.
2. accept latency: ``Enqueuer.submit`` until it returns (RabbitMQ: publisher confirm of a
   persistent message on a quorum queue; embedded: commit with synchronous=FULL), from one
   thread and from 8 threads at once.

Run from the repository root: ``.venv/bin/python bench/local/queue_drain.py`` (``--help``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from infermodes.queueing.connect import broker_from_url  # noqa: E402
from tests.support.async_plane import Process, to_csv, wait_consuming  # noqa: E402
from tests.support.processes import stop_process, wait_until  # noqa: E402
from tests.support.queue_worker import read_records, request, spawn  # noqa: E402
from tests.support.rabbitmq import rabbitmq_broker  # noqa: E402

CONCURRENCY = 4  # per worker process
SUBMIT_THREADS = 8
DRAIN_TIMEOUT = 600.0


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def submit_all(url: str, endpoint: str, bodies: list[tuple[str, bytes]]) -> list[float]:
    """Submits from ``SUBMIT_THREADS`` threads; returns each submit's seconds."""
    enqueuer = broker_from_url(url).enqueuer({endpoint: 3}, SUBMIT_THREADS)

    def one(item: tuple[str, bytes]) -> float:
        started = time.perf_counter()
        enqueuer.submit(endpoint, *item)
        return time.perf_counter() - started

    try:
        with concurrent.futures.ThreadPoolExecutor(SUBMIT_THREADS) as pool:
            return list(pool.map(one, bodies))
    finally:
        enqueuer.close()


def submit_serially(url: str, endpoint: str, bodies: list[tuple[str, bytes]]) -> list[float]:
    enqueuer = broker_from_url(url).enqueuer({endpoint: 3}, 1)
    took = []
    try:
        for item in bodies:
            started = time.perf_counter()
            enqueuer.submit(endpoint, *item)
            took.append(time.perf_counter() - started)
    finally:
        enqueuer.close()
    return took


@contextlib.contextmanager
def workers(
    url: str, endpoint: str, results: Path, count: int, model: str | None
) -> Iterator[list[Process]]:
    started = [spawn(url, endpoint, results, model, CONCURRENCY) for _ in range(count)]
    try:
        for worker in started:
            wait_consuming(worker)
        yield started
    finally:
        for worker in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.proc.pid, signal.SIGCONT)
            stop_process(worker.proc)


def drain(
    url: str, endpoint: str, folder: Path, count: int, messages: int, model: str | None
) -> dict[str, float]:
    """Fill while ``count`` workers are paused, resume them, time until every message was
    handled (the last record's time)."""
    rows = to_csv([[1, 0, 0, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]] * 3)
    bodies = [
        (f"m{i}", request(folder, endpoint, f"m{i}", rows).to_bytes()) for i in range(messages)
    ]
    results = folder / "results"
    with workers(url, endpoint, results, count, model) as started:
        for worker in started:
            os.kill(worker.proc.pid, signal.SIGSTOP)
        submit_all(url, endpoint, bodies)
        resumed = time.time()
        for worker in started:
            os.kill(worker.proc.pid, signal.SIGCONT)
        wait_until(
            lambda: len({r.inference_id for r in read_records(results)}) >= messages,
            DRAIN_TIMEOUT,
            f"{messages} messages handled",
            interval=0.2,
        )
    records = read_records(results)
    seconds = max(r.at for r in records) - resumed
    outcomes = {o: sum(r.outcome == o for r in records) for o in {r.outcome for r in records}}
    return {"messages": messages, "seconds": seconds, "rate": messages / seconds, **outcomes}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "samples": len(ordered),
    }


def accept_latency(url: str, folder: Path, samples: int) -> dict[str, object]:
    rows = to_csv([[1, 0, 0, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]])
    bodies = [
        (f"a{i}", request(folder, "accept", f"a{i}", rows).to_bytes()) for i in range(samples)
    ]
    one = submit_serially(url, "accept", bodies[:10] + bodies)[10:]  # 10 warm-ups
    started = time.perf_counter()
    many = submit_all(url, "accept", [(f"b{i}", body) for i, (_, body) in enumerate(bodies)])
    rate = samples / (time.perf_counter() - started)
    return {
        "one_thread": percentiles(one),
        f"{SUBMIT_THREADS}_threads": {**percentiles(many), "rate": rate},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trivial-messages", type=int, default=6000)
    parser.add_argument("--predict-messages", type=int, default=2000)
    parser.add_argument("--accept-samples", type=int, default=500)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_start": os.getloadavg(),
        "concurrency_per_worker": CONCURRENCY,
    }
    with tempfile.TemporaryDirectory() as tmp, rabbitmq_broker() as rabbit:
        root = Path(tmp)
        subprocess.run(
            [sys.executable, str(REPO / "examples/abalone/train.py"), "--output", str(root / "m")],
            check=True,
            capture_output=True,
        )
        model = f"file://{root / 'm' / 'model.tar.gz'}"

        # each run on a fresh queue: a new quorum queue, a new SQLite file
        def urls(run: str) -> dict[str, str]:
            return {"embedded": f"sqlite://{root}/{run}.db", "rabbitmq": rabbit.amqp_url}

        drains: dict[str, object] = {}
        for handler, messages, uri in (
            ("trivial", args.trivial_messages, None),
            ("predict", args.predict_messages, model),
        ):
            for count in args.workers:
                for name, url in urls(f"{handler}{count}").items():
                    endpoint = f"{handler}{count}-{name}"
                    figures = drain(url, endpoint, root / endpoint, count, messages, uri)
                    drains[f"{handler}/{count} workers/{name}"] = figures
                    log(f"{handler}, {count} worker(s), {name}: {figures['rate']:.0f} msg/s")
        results["drain"] = drains
        results["accept"] = {
            name: accept_latency(url, root / f"accept-{name}", args.accept_samples)
            for name, url in urls("accept").items()
        }
        log(json.dumps(results["accept"], indent=1))
    results["load_average_at_end"] = os.getloadavg()
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
