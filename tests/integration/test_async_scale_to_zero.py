"""The operator's scale-to-zero decision for an async pool on real parts: a RabbitMQ whose
management API reports sampled figures (or is not used), a real worker holding a long request,
the operator's own readers of the queue and of the workers' metrics. RabbitMQ samples every
5 s by default; here the interval is stretched to 10 minutes so the test reads the sample that
predates the request every time instead of racing the broker's timer."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

from infermodes.endpoints.demand import Demand
from infermodes.endpoints.scaling import ScalerMemory
from infermodes.endpoints.spec import EndpointSpec
from infermodes.metrics import fetch_metrics_text, parse_worker_in_flight, read_all
from infermodes.operator.modes import async_
from infermodes.operator.modes.base import Signals
from infermodes.operator.observed import WorkloadState
from infermodes.operator.signals.backlog import read_backlog
from tests.conftest import AbaloneModel
from tests.support.async_plane import Process, plane
from tests.support.processes import wait_until
from tests.support.rabbitmq import rabbitmq_broker

WAIT = 60.0
LOCATION = "X-Amzn-SageMaker-InputLocation"


def signals(
    endpoint: str, worker: Process, broker_urls: tuple[str, str | None], silent: bool = False
) -> Signals:
    """What the operator observes: one running worker pod, the queue read as the operator
    reads it, the pod's metrics fetched as the operator fetches them (from the worker's own
    port on loopback, where the cluster's pod would listen on ``async_.METRICS_PORT``).
    ``silent`` adds a second running pod at an address where nothing answers."""
    ips = ["127.0.0.1", "127.0.0.2"] if silent else ["127.0.0.1"]
    running = [{"name": "worker", "state": {"running": {}}}]
    pods = [
        {"metadata": {"name": f"worker-{n}"},
         "status": {"podIP": ip, "phase": "Running", "containerStatuses": running}}
        for n, ip in enumerate(ips)
    ]  # fmt: skip
    pool = WorkloadState(True, len(pods), len(pods), len(pods), True)
    now = time.monotonic()
    fetch = lambda ip: fetch_metrics_text(ip, port(worker))  # noqa: E731
    return Signals(
        pool, {}, pods, dict, lambda ips, _port: read_all(fetch, ips),
        lambda: read_backlog(endpoint, *broker_urls), Demand(), now, time.time(), True,
    )  # fmt: skip


def test_a_sampled_empty_queue_does_not_take_the_pool_from_a_busy_worker(
    abalone_model: AbaloneModel, big_input: Path, tmp_path: Path
) -> None:
    endpoint = "sampled"
    spec = EndpointSpec.model_validate({
        "mode": "async",
        "model": {"uri": f"file://{abalone_model.tarball}"},
        "async": {"outputPath": f"file://{tmp_path}/output", "minReplicas": 0, "maxReplicas": 2,
                  "scaleInCooldownSeconds": 0,
                  "brokerSecretRef": {"name": "rabbitmq", "key": "url"}},
    })  # fmt: skip
    with (
        rabbitmq_broker(statistics_interval_ms=600_000) as broker,
        plane(broker, endpoint, f"file://{tmp_path}", tmp_path) as live,
    ):
        urls = (broker.amqp_url, broker.management_url)
        worker = live.start_worker(f"file://{abalone_model.tarball}", "w", concurrency=1)
        long_input = tmp_path / "long.csv"  # ~200 MB: seconds of work on a fast machine
        block = big_input.read_bytes()
        with long_input.open("wb") as out:
            for _ in range(8):
                out.write(block)
        response = live.invoke(headers={LOCATION: f"file://{long_input}"})
        assert response.status_code == 202, response.text
        output = tmp_path / "output" / f"{response.json()['InferenceId']}.out"
        held = lambda: parse_worker_in_flight(fetch_metrics_text("127.0.0.1", port(worker)) or "")  # noqa: E731
        wait_until(lambda: held() == 1, WAIT, "the worker holds the request")

        memory = ScalerMemory()
        busy = signals(endpoint, worker, urls)
        figures = busy.backlog()
        assert figures is not None and (figures.ready, figures.in_flight) == (0, 0), figures
        assert not output.exists(), "the request ended before the decisions: use a larger input"
        assert async_.replicas(spec, busy, memory) == 1  # the worker said it holds one
        assert async_.replicas(spec, signals(endpoint, worker, urls), memory) == 1
        assert memory.empty_since is None
        amqp_only = (broker.amqp_url, None)  # no management API: the broker counts no in-flight
        assert async_.replicas(spec, signals(endpoint, worker, amqp_only), ScalerMemory()) == 1
        status = async_.observe(spec, signals(endpoint, worker, amqp_only), None)
        assert status.backlog is not None and status.backlog.in_flight == 1, status
        kept = async_.observe(spec, signals(endpoint, worker, urls, silent=True), None)
        assert kept.reason == "InFlightUnknown" and "worker(s) worker-1 " in kept.message, kept

        wait_until(output.exists, WAIT, "the output")
        wait_until(lambda: held() == 0, WAIT, "the worker done")
        # the operator decides again every loop: a reading the loaded machine could not take
        # in time (in-flight unknown) keeps the pool and restarts the empty cooldown (0 s here)
        amqp_memory = ScalerMemory()

        def idle(broker_urls: tuple[str, str | None], memory: ScalerMemory) -> bool:
            return async_.replicas(spec, signals(endpoint, worker, broker_urls), memory) == 0

        wait_until(lambda: idle(urls, memory), WAIT, "the pool at zero once the worker is done")
        wait_until(lambda: idle(amqp_only, amqp_memory), WAIT, "without the management API")


def port(worker: Process) -> int:
    found = urlsplit(worker.url).port
    assert found is not None
    return found
