"""Real processes of the async data plane for tests and benchmarks: ``infermodes async-api``,
``infermodes worker``, and a notification subscriber bound to the real topic exchange."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pika

from infermodes.queue import NOTIFICATION_EXCHANGE, connect, dead_letter_queue_name
from tests.support.processes import INFERMODES, free_port, stop_process, wait_until
from tests.support.rabbitmq import Broker


@dataclass
class Process:
    """A started ``infermodes`` subcommand; ``log`` reads what it wrote so far."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> Process:
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [INFERMODES, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Process(proc, log_path)


@contextlib.contextmanager
def running_api(
    broker: Broker,
    endpoints: dict[str, str],
    log_path: Path,
    env: dict[str, str] | None = None,
    max_attempts: int = 3,
) -> Iterator[Process]:
    """``endpoints``: name -> storage prefix (input/, output/, failure/ under it)."""
    port = free_port()
    args = ["async-api", "--broker-url", broker.amqp_url, "--port", str(port)]
    args += ["--max-attempts", str(max_attempts)]
    for name, prefix in endpoints.items():
        args += ["--endpoint", f"{name}={prefix}"]
    api = spawn(args, log_path, env)
    api.url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if api.proc.poll() is not None:
            return True
        try:
            return httpx.get(f"{api.url}/ping", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, "the async API")
        if api.proc.poll() is not None:
            raise RuntimeError(f"async-api exited with {api.proc.returncode}:\n{api.log}")
        yield api
    finally:
        stop_process(api.proc)


def start_worker(
    broker: Broker,
    endpoint: str,
    model_uri: str,
    log_path: Path,
    concurrency: int = 2,
    max_attempts: int = 3,
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> Process:
    """Started and consuming (its log says so) before this returns."""
    metrics_port = free_port()
    args = [
        "worker",
        "--endpoint",
        endpoint,
        "--model",
        model_uri,
        "--broker-url",
        broker.amqp_url,
        "--max-concurrent-invocations",
        str(concurrency),
        "--max-attempts",
        str(max_attempts),
        "--metrics-port",
        str(metrics_port),
        *extra,
    ]
    worker_env = {"INFERMODES_WORKER_RETRY_BACKOFF_SECONDS": "0.05", **(env or {})}
    worker = spawn(args, log_path, worker_env)
    worker.url = f"http://127.0.0.1:{metrics_port}"
    wait_until(
        lambda: worker.proc.poll() is not None or "consuming" in worker.log, 60, "the worker"
    )
    if worker.proc.poll() is not None:
        raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.log}")
    return worker


@contextlib.contextmanager
def workers() -> Iterator[list[Process]]:
    """Collects workers a test starts and stops each (by PID) at the end."""
    started: list[Process] = []
    try:
        yield started
    finally:
        for worker in started:
            stop_process(worker.proc, grace=30)


@dataclass
class Notifications:
    """A durable queue bound to ``<endpoint>.*`` on the notification exchange, declared before
    any request is sent, so nothing is missed even across a broker restart."""

    broker: Broker
    endpoint: str
    received: list[dict[str, object]] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return f"test.notifications.{self.endpoint}"

    def declare(self) -> Notifications:
        connection = connect(self.broker.amqp_url)
        channel = connection.channel()
        channel.exchange_declare(NOTIFICATION_EXCHANGE, "topic", durable=True)
        channel.queue_declare(self.queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(self.queue, NOTIFICATION_EXCHANGE, routing_key=f"{self.endpoint}.*")
        connection.close()
        return self

    def drain(self) -> list[dict[str, object]]:
        """Fetch what arrived since the last call (bounded); a broker that is down gives none."""
        try:
            connection = connect(self.broker.amqp_url)
        except pika.exceptions.AMQPError:
            return self.received
        try:
            channel = connection.channel()
            for _ in range(100_000):
                method, _props, body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    break
                note = json.loads(body)
                note["routingKey"] = method.routing_key
                self.received.append(note)
        finally:
            if connection.is_open:
                connection.close()
        return self.received

    def ids(self, status: str) -> Counter[str]:
        return Counter(
            str(n["inferenceId"]) for n in self.received if n["invocationStatus"] == status
        )

    def wait_for(self, ids: set[str], status: str, timeout: float) -> None:
        wait_until(
            lambda: ids <= set(self.drain() and self.ids(status)),
            timeout,
            f"{len(ids)} {status} notifications",
            interval=0.2,
        )


def dead_letters(broker: Broker, endpoint: str) -> list[bytes]:
    """Read (and remove) what the endpoint's dead-letter queue holds."""
    connection = connect(broker.amqp_url)
    bodies = []
    try:
        channel = connection.channel()
        for _ in range(10_000):
            method, _props, body = channel.basic_get(dead_letter_queue_name(endpoint), True)
            if method is None:
                break
            bodies.append(body)
    finally:
        connection.close()
    return bodies


def invoke(
    client: httpx.Client,
    endpoint: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return client.post(
        f"/endpoints/{endpoint}/async-invocations",
        content=body,
        headers={"content-type": "text/csv", **(headers or {})},
    )


def to_csv(rows: object) -> bytes:
    return ("\n".join(",".join(repr(float(v)) for v in row) for row in rows) + "\n").encode()  # type: ignore[attr-defined]
