"""What an async endpoint's spec means for the processes that serve it: the settings values of
``infermodes worker`` and the endpoint layout of ``infermodes async-api``. Pure: the operator
and the local runtime turn these into environments with ``plan.settings_env``, and a test
reads them back through the settings classes."""

from __future__ import annotations

from collections.abc import Mapping

from infermodes.endpoints.plan import ProcessPlan, settings_env
from infermodes.endpoints.spec import AsyncSpec, EndpointSpec, quantity_bytes
from infermodes.settings import (
    MAX_INVOCATION_TIMEOUT_SECONDS,
    AsyncApiSettings,
    AsyncEndpoint,
    WorkerSettings,
)

INPUT_FOLDER = "input"  # inline inputs go to <outputPath>/input unless inputPath says otherwise
# How long a stopped worker may take to finish what it holds: a request may set any timeout up
# to the maximum, whatever the endpoint's default, plus writing, notifying and acknowledging.
WORKER_STOP_GRACE_SECONDS = MAX_INVOCATION_TIMEOUT_SECONDS + 60
# A worker's /readyz is asked this often, and one that was ready counts as unready only after
# this many failed answers in a row: the pods' readiness probe and ``up``'s alike, so a slow
# answer from a busy worker does not rank it first for a scale-in
WORKER_READY_PERIOD_SECONDS = 1
WORKER_READY_FAILURE_THRESHOLD = 3


def async_block(spec: EndpointSpec) -> AsyncSpec:
    """``spec.async`` of an async endpoint (validation guarantees it is there)."""
    if spec.async_ is None:
        raise ValueError(f"a {spec.mode} endpoint has no spec.async")
    return spec.async_


def async_endpoint(spec: AsyncSpec, namespace: str | None = None) -> AsyncEndpoint:
    """The API's view of the endpoint: paths with their documented defaults, the default
    invocation timeout, the queue's attempts, and (on Kubernetes) its namespace."""
    return AsyncEndpoint(
        input_path=spec.input_path or f"{spec.output_path.rstrip('/')}/{INPUT_FOLDER}",
        output_path=spec.output_path,
        failure_path=spec.failure_path or spec.output_path,
        invocation_timeout_seconds=spec.invocation_timeout_seconds,
        max_attempts=spec.max_attempts,
        namespace=namespace,
    )


def worker_values(name: str, spec: EndpointSpec) -> dict[str, object]:
    """``WorkerSettings`` field values the spec decides (the broker URL is the actuator's)."""
    block = async_block(spec)
    notification = block.notification
    return {
        "endpoint": name,
        "model_uri": spec.model.uri,
        "allow_pickle": spec.model.allow_pickle,
        "max_concurrent_invocations": block.max_concurrent_invocations_per_instance,
        "max_attempts": block.max_attempts,
        "notify_topic": notification.topic,
        "success_webhook_urls": [url for url in [notification.success_webhook] if url],
        "error_webhook_urls": [url for url in [notification.error_webhook] if url],
        # the pod's limit, said to the worker: under ``up`` its processes share one cgroup
        "memory_bytes": quantity_bytes(block.resources.memory),
    }


def worker(name: str, spec: EndpointSpec) -> ProcessPlan:
    """``infermodes worker`` for one async endpoint."""
    return ProcessPlan(
        ("infermodes", "worker"), settings_env(WorkerSettings, **worker_values(name, spec))
    )


def async_api_env(endpoints: Mapping[str, EndpointSpec]) -> dict[str, str]:
    """The environment of an ``infermodes async-api`` that accepts for these endpoints."""
    layouts = {
        name: async_endpoint(async_block(spec)).model_dump() for name, spec in endpoints.items()
    }
    return settings_env(AsyncApiSettings, endpoints=layouts)
