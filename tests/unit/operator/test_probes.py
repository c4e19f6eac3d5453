"""Every long-running endpoint pod has a liveness probe, on a port and path its process serves
(the env it is given pins that port; a Secret's envFrom cannot move it), apart from the port its
requests take: the probe must answer while the process is busy (``server.liveness``)."""

from __future__ import annotations

from typing import Any

import pytest

from infermodes.endpoints import spec as s
from infermodes.endpoints.plan import env_name
from infermodes.metrics import LIVENESS_PATH
from infermodes.operator import handlers
from infermodes.operator.modes import mode_for
from infermodes.settings import BatchSettings, OperatorSettings, ServeSettings, WorkerSettings
from tests.unit.operator.test_realtime import REF

MODEL = {"uri": "s3://models/m.tar.gz"}
SYNCHRONOUS = {"realtime": {"realtime": {}}, "serverless": {"serverless": {}}}


def container_of(spec: dict[str, Any]) -> dict[str, Any]:
    endpoint = s.EndpointSpec.model_validate({"model": MODEL, **spec})
    objects = mode_for(endpoint.mode).desired_objects(REF, endpoint, 1, "img:1")
    pod = next(o for o in objects if o["kind"] in ("Deployment", "Job"))["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    return container


@pytest.mark.parametrize("mode", sorted(SYNCHRONOUS))
def test_a_model_server_is_probed_for_liveness_on_its_own_liveness_port(mode: str) -> None:
    container = container_of({"mode": mode, **SYNCHRONOUS[mode]})
    probe = container["livenessProbe"]["httpGet"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert probe["path"] == LIVENESS_PATH
    assert env[env_name(ServeSettings, "liveness_port")] == str(probe["port"])
    assert probe["port"] != container["readinessProbe"]["httpGet"]["port"]  # not /invocations'
    assert probe["port"] in {p["containerPort"] for p in container["ports"]}


@pytest.mark.parametrize(
    ("host", "port", "endpoint"),
    [
        ("10.0.0.7", 8081, "http://10.0.0.7:8081/healthz"),
        ("fd00::7", 8081, "http://[fd00::7]:8081/healthz"),
        ("10.0.0.7", 0, None),
    ],
)
def test_the_operator_runs_kopf_with_its_liveness_endpoint(
    monkeypatch: pytest.MonkeyPatch, host: str, port: int, endpoint: str | None
) -> None:
    """kopf answers it on the operator's event loop: a loop that hangs fails the probe."""
    given: dict[str, Any] = {}
    monkeypatch.setattr(handlers.kopf, "run", lambda **options: given.update(options))
    monkeypatch.setattr(handlers, "configure", lambda *_: None)
    monkeypatch.setattr(handlers, "configure_logging", lambda _: None)
    handlers.run_operator(OperatorSettings(metrics_host=host, liveness_port=port))
    assert given["liveness_endpoint"] == endpoint


def test_an_async_worker_is_probed_for_liveness_once_its_metrics_port_opens() -> None:
    """Its metrics thread answers ``/healthz`` from its consumer loop's turns; the port opens
    once the model is loaded, so the startup probe waits for it before liveness counts."""
    container = container_of({"mode": "async", "async": {"outputPath": "s3://o/out/"}})
    metrics = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[env_name(WorkerSettings, "metrics_port")] == str(metrics)
    assert container["livenessProbe"]["httpGet"] == {"path": LIVENESS_PATH, "port": "metrics"}
    assert container["startupProbe"]["tcpSocket"] == {"port": "metrics"}
    assert container["livenessProbe"]["timeoutSeconds"] >= 5  # a thread under a busy GIL


def test_a_batch_instance_is_probed_for_liveness_on_its_metrics_port() -> None:
    """Its metrics thread, which serves before the model loads (no startup probe to wait
    for), answers ``/healthz`` from when its mini-batches in flight were handed out."""
    batch = {"input": {"uri": "s3://d/in/"}, "output": {"uri": "s3://d/out/"}}
    container = container_of({"mode": "batch", "batch": batch})
    metrics = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[env_name(BatchSettings, "metrics_port")] == str(metrics)
    assert container["livenessProbe"]["httpGet"] == {"path": LIVENESS_PATH, "port": "metrics"}
    assert container["livenessProbe"]["timeoutSeconds"] >= 5  # a thread under a busy GIL
