"""Real processes of the async data plane for tests and benchmarks: ``infermodes async-api``,
``infermodes worker``, and a notification subscriber bound to the real topic exchange."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pika

from infermodes.queueing import connect as queues
from infermodes.queueing.broker import NOTIFICATION_EXCHANGE, Delivery, Settle, outbox_name
from infermodes.queueing.messages import InvocationRequest
from infermodes.queueing.notifications import webhook_job
from infermodes.queueing.rabbitmq import (
    RabbitConsumer,
    RequestPublisher,
    connect,
    dead_letter_queue_name,
)
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
    allowed_input_prefixes: tuple[str, ...] = (),
    broker_url: str | None = None,
) -> Iterator[Process]:
    """``endpoints``: name -> storage prefix (input/, output/, failure/ under it);
    ``broker_url``: instead of the broker's own (another query, or a broker that is down)."""
    port = free_port()
    args = ["async-api", "--broker-url", broker_url or broker.amqp_url, "--port", str(port)]
    args += ["--max-attempts", str(max_attempts)]
    for prefix in allowed_input_prefixes:
        args += ["--allow-input-prefix", prefix]
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


def spawn_worker(
    broker: Broker,
    endpoint: str,
    model_uri: str,
    log_path: Path,
    concurrency: int = 2,
    max_attempts: int = 3,
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
    broker_url: str | None = None,
) -> Process:
    """Started, not yet ready: see ``wait_consuming``. Retries back off for 50 ms, not 1 s."""
    metrics_port = free_port()
    args = [
        "worker",
        "--endpoint",
        endpoint,
        "--model",
        model_uri,
        "--broker-url",
        broker_url or broker.amqp_url,
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
    return worker


def wait_consuming(worker: Process) -> None:
    wait_until(
        lambda: worker.proc.poll() is not None or "consuming" in worker.log, 60, "the worker"
    )
    if worker.proc.poll() is not None:
        raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.log}")


@dataclass
class Plane:
    """An async API for one endpoint, a client for it, and the workers a test starts (all
    stopped by PID when the ``plane`` block ends)."""

    broker: Broker
    endpoint: str
    client: httpx.Client
    root: Path
    env: dict[str, str] | None
    max_attempts: int
    broker_url: str | None = None
    api: Process | None = None
    workers: list[Process] = field(default_factory=list)

    def invoke(self, body: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post(
            f"/endpoints/{self.endpoint}/async-invocations",
            content=body,
            headers={"content-type": "text/csv", **(headers or {})},
        )

    def start_worker(
        self, model_uri: str, name: str, concurrency: int = 2, extra: tuple[str, ...] = ()
    ) -> Process:
        """Returns once the worker consumes; ``extra``: more command-line options."""
        worker = spawn_worker(
            self.broker,
            self.endpoint,
            model_uri,
            self.root / f"{name}.log",
            concurrency,
            self.max_attempts,
            self.env,
            extra,
            self.broker_url,
        )
        self.workers.append(worker)
        wait_consuming(worker)
        return worker


@contextlib.contextmanager
def plane(
    broker: Broker,
    endpoint: str,
    prefix: str,
    root: Path,
    env: dict[str, str] | None = None,
    max_attempts: int = 3,
    allowed_input_prefixes: tuple[str, ...] | None = None,
    broker_url: str | None = None,
) -> Iterator[Plane]:
    """``prefix``: the endpoint's storage (input/, output/, failure/ under it). By-reference
    inputs may come from the session's temp folders (root's parent) and ``s3://`` unless
    ``allowed_input_prefixes`` says otherwise; ``broker_url`` is for the API and workers."""
    if allowed_input_prefixes is None:
        allowed_input_prefixes = (f"file://{root.parent}", "s3://")
    with (
        running_api(
            broker,
            {endpoint: prefix},
            root / "api.log",
            env,
            max_attempts,
            allowed_input_prefixes,
            broker_url,
        ) as api,
        httpx.Client(base_url=api.url, timeout=30) as client,
    ):
        running = Plane(broker, endpoint, client, root, env, max_attempts, broker_url, api)
        try:
            yield running
        finally:
            for worker in running.workers:
                stop_process(worker.proc, grace=30)


HOLD_SECONDS = 120  # a held try answers at the latest after this


class WebhookReceiver:
    """An HTTP server on loopback that records the JSON bodies POSTed to it. ``holds`` picks
    the event each body waits for before any answer (None: answered at once): each try then
    ends at the worker's 10 s cutoff and its next try is held again, so with
    ``WEBHOOK_ATTEMPTS`` 10 a request is held for minutes, however slow the machine. (An
    answer trickled a byte a second held a request only to the first cutoff: the worker took
    its status as the answer.) ``status`` picks each answer's status (204 by default)."""

    def __init__(
        self,
        holds: Callable[[dict[str, object]], threading.Event | None] | None = None,
        status: Callable[[dict[str, object]], int] = lambda _: 204,
    ) -> None:
        received: list[dict[str, object]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                body = json.loads(self.rfile.read(length))
                received.append(body)
                event = holds(body) if holds is not None else None
                if event is not None:
                    event.wait(HOLD_SECONDS)
                with contextlib.suppress(OSError):  # a try the worker cut short
                    self.send_response(status(body))
                    self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def ids(self) -> set[object]:
        """The requests whose notification was received: a try again repeats one."""
        return {body.get("inferenceId") for body in self.received}

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


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


def dead_letter_ids(broker: Broker, endpoint: str, count: int, timeout: float = 30) -> list[str]:
    """The inference ids of the first ``count`` dead letters, read as they arrive: a worker
    counts one once it rejected the message, and the broker moves it to the dead-letter
    queue a moment later (so more than ``count`` would go unseen: compare the whole list)."""
    found: list[str] = []

    def arrived() -> bool:
        found.extend(json.loads(body)["inferenceId"] for body in dead_letters(broker, endpoint))
        return len(found) >= count

    wait_until(arrived, timeout, f"{count} dead letter(s) of {endpoint}", interval=0.2)
    time.sleep(0.5)  # one that should not be there has had time to arrive too
    return found + [json.loads(body)["inferenceId"] for body in dead_letters(broker, endpoint)]


def submit_unreadable(
    broker: Broker,
    endpoint: str,
    inference_id: str,
    folder: Path,
    max_attempts: int,
    input_uri: str,
) -> None:
    """Queue a request no worker can read (``acceptedAt`` is not a time, as a publisher of
    another version might send it): a retryable failure at every delivery, reported under
    ``folder``'s output/ and failure/ (its queue declared for ``max_attempts``)."""
    body = json.loads(folder_request(endpoint, inference_id, folder, input_uri).to_bytes())
    body["acceptedAt"] = "yesterday"
    publish(broker, endpoint, inference_id, json.dumps(body).encode(), max_attempts)


def folder_request(
    endpoint: str, inference_id: str, folder: Path, input_uri: str, **fields: object
) -> InvocationRequest:
    """A CSV request whose result goes to ``folder``'s output/ and failure/."""
    values: dict[str, Any] = {
        "inference_id": inference_id,
        "endpoint": endpoint,
        "input_location": input_uri,
        "output_location": f"file://{folder}/output/{inference_id}.out",
        "failure_location": f"file://{folder}/failure/{inference_id}.error",
        "content_type": "text/csv",
        "accept": "text/csv",
        "accepted_at": time.time(),
        "expires_at": time.time() + 3600,
        "invocation_timeout_seconds": 900,
    }
    return InvocationRequest(**(values | fields))


def publish(broker: Broker, endpoint: str, message_id: str, body: bytes, max_attempts: int) -> None:
    """One message on the endpoint's queue, as an accepting side publishes it (confirmed)."""
    publisher = RequestPublisher(broker.amqp_url, {endpoint: max_attempts})
    try:
        publisher.submit(endpoint, message_id, body)
    finally:
        publisher.close()


def consume(broker: Broker, endpoint: str, max_attempts: int, count: int) -> list[bytes]:
    """The bodies of the first ``count`` requests a worker's consumer (which declares the
    endpoint's queues first, as a worker does) takes from the queue, each acked."""
    consumer = RabbitConsumer(broker.amqp_url, endpoint, max_attempts=max_attempts, concurrency=2)
    got: list[bytes] = []

    def handle(delivery: Delivery) -> Settle:
        got.append(delivery.body)
        return Settle.ACK

    loop = threading.Thread(target=consumer.run, args=(handle,), daemon=True)
    loop.start()
    try:
        wait_until(lambda: len(got) >= count, 30, f"{count} request(s) consumed")
    finally:
        consumer.stop()
        loop.join(30)
    assert not loop.is_alive()
    return got


def put_webhook_job(broker: queues.Broker, endpoint: str, inference_id: str) -> None:
    """A success webhook job left in the endpoint's outbox, as a worker publishes it before
    its ack (the outbox declared with the endpoint's queues)."""
    publisher = broker.publisher(endpoint, 3, 1)
    try:
        job = webhook_job({"inferenceId": inference_id}, success=True)
        publisher.publish("", outbox_name(endpoint), job, inference_id, True)
    finally:
        publisher.close()


def to_csv(rows: object) -> bytes:
    return ("\n".join(",".join(repr(float(v)) for v in row) for row in rows) + "\n").encode()  # type: ignore[attr-defined]
