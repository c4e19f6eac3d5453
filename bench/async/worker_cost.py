"""Where a worker's CPU per message goes, part by part, in this one process:

1. ``Processor`` alone (checks for an earlier result, reads the inline input, predicts, writes
   the output with its fsync, removes the input), 4 threads, the notifier a no-op;
2. the RabbitMQ consumer loop alone (prefetch 4, the handler acknowledges at once);
3. the same with one confirmed notification published per message, as a worker does.

Each reports CPU milliseconds (user + system) and context switches per message, from
``getrusage``; the broker parts also the broker's CPU milliseconds per message. Run from
the repository root::

    flock /tmp/infermodes-bench.lock .venv/bin/python bench/async/worker_cost.py
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from run import broker_pid, cpu_seconds  # noqa: E402

from infermodes.metrics import WorkerMetrics  # noqa: E402
from infermodes.predict.model import XGBoostModel  # noqa: E402
from infermodes.queueing.broker import NOTIFICATION_EXCHANGE, Delivery, Settle  # noqa: E402
from infermodes.queueing.messages import InvocationRequest  # noqa: E402
from infermodes.queueing.rabbitmq import (  # noqa: E402
    ChannelPool,
    RabbitConsumer,
    RequestPublisher,
    declare_topology,
)
from infermodes.settings import WorkerSettings  # noqa: E402
from infermodes.storage import Storage  # noqa: E402
from infermodes.workers.async_worker import Processor  # noqa: E402
from tests.support.abalone import trained_abalone  # noqa: E402
from tests.support.async_plane import to_csv  # noqa: E402
from tests.support.rabbitmq import Broker, rabbitmq_broker  # noqa: E402

CONCURRENCY = 4


class Meter:
    """This process's CPU time and context switches since it was made, and the broker's CPU
    time when given its pid."""

    def __init__(self, messages: int, broker_pid: int | None = None) -> None:
        self.messages = messages
        self.broker_pid = broker_pid
        self.broker_start = cpu_seconds(broker_pid) if broker_pid else 0.0
        self.start = self._now()
        self.began = time.perf_counter()

    @staticmethod
    def _now() -> tuple[float, int]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw

    def result(self, part: str) -> dict[str, object]:
        cpu, switches = self._now()
        result: dict[str, object] = {
            "part": part,
            "cpu_ms_per_message": round((cpu - self.start[0]) * 1000 / self.messages, 3),
            "context_switches_per_message": round((switches - self.start[1]) / self.messages, 1),
            "messages_per_s": round(self.messages / (time.perf_counter() - self.began)),
        }
        if self.broker_pid:
            broker_cpu = cpu_seconds(self.broker_pid) - self.broker_start
            result["broker_cpu_ms_per_message"] = round(broker_cpu * 1000 / self.messages, 3)
        return result


class NoNotifier:
    def send(self, endpoint: str, body: dict[str, object], success: bool) -> None:
        pass


def one_row_requests(root: Path, row: bytes, messages: int, claim: bool = True) -> list[bytes]:
    """Queue messages of one inline row each, their inputs stored under ``root/input``, as the
    accepting side makes them (``claim``: with a result claim location, as it does)."""
    (root / "input").mkdir()
    bodies = []
    for index in range(messages):
        (root / "input" / f"r{index}.in").write_bytes(row)
        now = time.time()
        bodies.append(InvocationRequest(
            inference_id=f"r{index}", endpoint="cost",
            input_location=f"file://{root}/input/r{index}.in",
            output_location=f"file://{root}/output/r{index}.out",
            failure_location=f"file://{root}/failure/r{index}.error",
            content_type="text/csv", accept="text/csv", accepted_at=now, expires_at=now + 3600,
            invocation_timeout_seconds=60, inline_input=True,
            claim_location=f"file://{root}/input/r{index}.result" if claim else None,
        ).to_bytes())  # fmt: skip
    return bodies


def processor_part(root: Path, messages: int) -> dict[str, object]:
    storage = Storage()
    model = XGBoostModel.load(f"file://{root}/model.tar.gz", storage)
    row = to_csv(np.loadtxt(root / "test.csv", delimiter=",", dtype=np.float32)[:1])
    bodies = one_row_requests(root, row, messages)
    settings = WorkerSettings(endpoint="cost", model_uri="unused", max_attempts=3)
    metrics = WorkerMetrics(CollectorRegistry())
    processor = Processor(settings, model, storage, NoNotifier(), metrics, threading.Event())
    meter = Meter(messages)
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(lambda body: processor.handle(body, 0), bodies))
    assert all(result.settle is Settle.ACK for result in results)
    return meter.result("processor: storage and predict")


def consumer_part(broker: Broker, messages: int, notify: bool) -> dict[str, object]:
    amqp_url = broker.amqp_url
    endpoint = f"cost-{int(notify)}"
    publisher = RequestPublisher(amqp_url, {endpoint: 3}, 8)
    for index in range(messages):
        publisher.submit(endpoint, f"m{index}", b"x" * 400)
    publisher.close()
    consumer = RabbitConsumer(amqp_url, endpoint, 3, CONCURRENCY)
    notifications = ChannelPool(
        amqp_url, CONCURRENCY, lambda channel: declare_topology(channel, endpoint, 3), "notify"
    )
    lock = threading.Lock()
    handled = [0]

    def handle(_delivery: Delivery) -> Settle:
        if notify:
            notifications.publish(NOTIFICATION_EXCHANGE, f"{endpoint}.success", b"y" * 400,
                                  "id", False)  # fmt: skip
        with lock:
            handled[0] += 1
            if handled[0] == messages:
                consumer.stop()
        return Settle.ACK

    meter = Meter(messages, broker_pid(broker))
    consumer.run(handle)
    notifications.close()
    part = "consumer loop" + (" + a confirmed notification" if notify else "")
    return meter.result(part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=HERE / "worker_cost_results.json")
    args = parser.parse_args()
    results: list[dict[str, object]] = []
    with trained_abalone("infermodes-bench-cost-") as root:
        results.append(processor_part(root, args.messages))
        print(json.dumps(results[-1]), flush=True)
        with rabbitmq_broker() as broker:
            for notify in (False, True):
                results.append(consumer_part(broker, args.messages, notify))
                print(json.dumps(results[-1]), flush=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
