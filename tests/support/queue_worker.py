"""A worker process over ``queueing.connect.broker_from_url`` for the embedded queue's tests and
benchmark: the real per-message ``Processor`` (predict, store, notify) or a trivial handler, on
whichever broker the URL names. ``infermodes worker`` is wired to RabbitMQ alone for now; this
runs the same parts through the broker interface.

Each delivery is recorded, before it is settled, as one line of ``<results>/<pid>.log``:
``<inference id> <outcome> <attempt> <pid> <unix time>``. A request computed twice shows as two
``success`` lines; a redelivery that found its output stored shows as ``duplicate`` (and is
all there is of a request whose worker was killed between storing the output and its line). With
``--submit N`` it submits N requests instead, printing ``accepted <id>`` as each returns, and
lingers until killed.

    python -m tests.support.queue_worker --url sqlite:///tmp/q.db --endpoint ep --results DIR
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infermodes.queueing.broker import Delivery, Settle
from infermodes.queueing.messages import InvocationRequest
from tests.support.async_plane import Process
from tests.support.processes import REPO

RECORD_FIELDS = 5
SUBMITTER_LINGERS_SECONDS = 120.0


@dataclass(frozen=True)
class Record:
    inference_id: str
    outcome: str
    attempt: int
    pid: int
    at: float


def read_records(results: Path) -> list[Record]:
    """Every complete line the workers wrote (a line cut by SIGKILL is not one)."""
    records = []
    for log in sorted(results.glob("*.log")):
        for line in log.read_text().splitlines():
            fields = line.split()
            if len(fields) == RECORD_FIELDS:
                records.append(
                    Record(fields[0], fields[1], int(fields[2]), int(fields[3]), float(fields[4]))
                )
    return records


def successes(results: Path) -> Counter[str]:
    return Counter(r.inference_id for r in read_records(results) if r.outcome == "success")


def finished(results: Path) -> set[str]:
    """Requests with a stored output: computed (``success``), or found stored by a redelivery
    (``duplicate``), which is all a request shows when its worker was killed after storing the
    output and before writing its record line."""
    return {r.inference_id for r in read_records(results) if r.outcome in ("success", "duplicate")}


def computed_once(results: Path) -> bool:
    """No request computed twice, and every request with no ``success`` line (its computing
    worker was killed before writing one) finished on a redelivery."""
    records = read_records(results)
    computed = Counter(r.inference_id for r in records if r.outcome == "success")
    redelivered = {r.inference_id for r in records if r.outcome == "duplicate" and r.attempt > 0}
    return max(computed.values(), default=0) <= 1 and finished(results) - set(computed) <= (
        redelivered
    )


def request(folder: Path, endpoint: str, inference_id: str, csv: bytes) -> InvocationRequest:
    """A request whose input is ``folder/input/<id>.csv`` (written here) and whose results go
    under ``folder/output`` and ``folder/failure``, as the accepting side would make it."""
    (folder / "input").mkdir(parents=True, exist_ok=True)
    source = folder / "input" / f"{inference_id}.csv"
    source.write_bytes(csv)
    now = time.time()
    return InvocationRequest(
        inference_id=inference_id,
        endpoint=endpoint,
        input_location=f"file://{source}",
        output_location=f"file://{folder}/output/{inference_id}.out",
        failure_location=f"file://{folder}/failure/{inference_id}.error",
        content_type="text/csv",
        accept="text/csv",
        accepted_at=now,
        expires_at=now + 3600,
        invocation_timeout_seconds=60,
        input_root=f"file://{folder}/input/",
    )


def spawn(
    url: str,
    endpoint: str,
    results: Path,
    model_uri: str | None = None,
    concurrency: int = 2,
    delay: float = 0.0,
    max_attempts: int = 3,
) -> Process:
    """Started in its own session, not yet consuming (see ``async_plane.wait_consuming``); its
    log is ``<results>/worker-<n>.out``."""
    results.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "tests.support.queue_worker", "--url", url]
    args += ["--endpoint", endpoint, "--results", str(results)]
    args += ["--concurrency", str(concurrency), "--delay", str(delay)]
    args += ["--max-attempts", str(max_attempts)]
    if model_uri:
        args += ["--model", model_uri]
    log_path = results / f"worker-{len(list(results.glob('worker-*.out')))}.out"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(proc, log_path)


def spawn_submitter(url: str, endpoint: str, count: int, folder: Path, csv: Path) -> Process:
    """Submits ``count`` requests, each input a copy of ``csv``; its log, ``folder/submitter.out``,
    says ``accepted <id>`` as each submit returns."""
    folder.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "tests.support.queue_worker", "--url", url]
    args += ["--endpoint", endpoint, "--results", str(folder), "--submit", str(count)]
    args += ["--folder", str(folder), "--csv", str(csv)]
    log_path = folder / "submitter.out"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(proc, log_path)


def accepted(submitter: Process) -> set[str]:
    return {line.split()[1] for line in submitter.log.splitlines() if line.startswith("accepted ")}


def main(argv: list[str] | None = None) -> int:
    from prometheus_client import CollectorRegistry

    from infermodes.logs import configure_logging
    from infermodes.metrics import WorkerMetrics
    from infermodes.predict.model import XGBoostModel
    from infermodes.queueing.connect import broker_from_url
    from infermodes.queueing.notifications import Notifier, Webhooks
    from infermodes.settings import WorkerSettings
    from infermodes.storage import Storage
    from infermodes.workers.async_worker import Processor, Result

    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--model", help="model URI: the real Processor; else a trivial handler")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.0, help="added to each delivery")
    parser.add_argument("--submit", type=int, help="instead: submit this many requests ...")
    parser.add_argument("--folder", type=Path, help="... with inputs, outputs and failures here")
    parser.add_argument("--csv", type=Path, help="... each input a copy of this file")
    args = parser.parse_args(argv)
    configure_logging("info")
    broker = broker_from_url(args.url)
    if args.submit:
        enqueuer = broker.enqueuer({args.endpoint: args.max_attempts}, 1)
        for i in range(args.submit):
            message = request(args.folder, args.endpoint, f"r{i}", args.csv.read_bytes())
            enqueuer.submit(args.endpoint, message.inference_id, message.to_bytes())
            print(f"accepted {message.inference_id}", flush=True)
        time.sleep(SUBMITTER_LINGERS_SECONDS)  # with its connection open, until killed
        return 0
    consumer = broker.consumer(args.endpoint, args.max_attempts, args.concurrency)
    publisher = broker.publisher(args.endpoint, args.max_attempts, min(args.concurrency, 8))
    if args.model:
        settings = WorkerSettings(
            endpoint=args.endpoint,
            model_uri=args.model,
            broker_url=args.url,
            max_concurrent_invocations=args.concurrency,
            max_attempts=args.max_attempts,
            retry_backoff_seconds=0.05,
            metrics_port=0,
        )
        storage = Storage()
        metrics = WorkerMetrics(CollectorRegistry())
        notifier = Notifier(publisher, metrics, Webhooks())
        model = XGBoostModel.load(args.model, storage)
        processor = Processor(settings, model, storage, notifier, metrics, consumer.stopping)
        consumer.on_attempts_allowed = processor.allow_attempts
        process: Callable[[bytes, int], Result] = processor.handle
    else:
        process = lambda _body, _attempt: Result(Settle.ACK, "success")  # noqa: E731

    pid = os.getpid()
    results = (args.results / f"{pid}.log").open("a", buffering=1)
    lock = threading.Lock()

    def handle(delivery: Delivery) -> Settle:
        if args.delay:
            time.sleep(args.delay)
        result = process(delivery.body, delivery.attempt)
        inference_id = json.loads(delivery.body)["inferenceId"]
        with lock:
            results.write(
                f"{inference_id} {result.outcome} {delivery.attempt} {pid} {time.time()}\n"
            )
        return result.settle

    signal.signal(signal.SIGTERM, lambda _signum, _frame: consumer.stop())
    consumer.run(handle)
    publisher.close()
    results.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
