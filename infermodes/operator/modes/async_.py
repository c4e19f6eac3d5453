"""Async endpoints: a pool of queue workers scaled on the backlog, from and to zero.

A Deployment of ``infermodes worker`` (prefetch = ``maxConcurrentInvocationsPerInstance``) that
consumes the endpoint's RabbitMQ quorum queue; each worker declares the queue, its dead-letter
queue and their bindings when it connects (idempotently), with its AMQP URL from the Secret the
spec names. Replicas follow ready + unacknowledged messages (``endpoints.scaling``), with one
worker kept (or started) while webhook jobs wait in the endpoint's outbox; when the
broker's figures would let the pool shrink, or it does not count unacknowledged messages (no
management API), the workers' own in-flight counts are asked too (``pool_figures``: unknown, so
no scale-in, while one cannot say), so a pool does not shrink under work it holds. Before a
scale-in, each worker's in-flight count becomes its ``pod-deletion-cost`` (``removal_cost``:
the most for one that cannot say), so the ReplicaSet removes idle workers first; a removed
worker stops consuming, finishes what it holds (the grace period outlasts the longest
invocation timeout a request may set, whatever the endpoint's default), acknowledges and
exits. The status carries the age of the oldest waiting request: the
broker's for a classic queue, else estimated from when the newest request each worker took was
accepted (``status.oldest_age_from_dequeues``).

Deleting the endpoint removes the workers; its queue and the requests in it stay on the broker
(re-creating the endpoint picks them up), as a queue the operator deleted would lose accepted
requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infermodes.endpoints import spec as s
from infermodes.endpoints.async_plan import (
    WORKER_READY_FAILURE_THRESHOLD,
    WORKER_READY_PERIOD_SECONDS,
    WORKER_STOP_GRACE_SECONDS,
    async_block,
    worker,
)
from infermodes.endpoints.plan import env_name
from infermodes.endpoints.scaling import (
    ScalerMemory,
    backlog_replicas,
    pool_in_flight,
    removal_cost,
)
from infermodes.endpoints.status import (
    NAME_IN_USE,
    QueueFigures,
    Status,
    pool_standing,
    pool_starting,
    served,
    update_blocked,
    with_estimated_age,
)
from infermodes.metrics import (
    READY_PATH,
    parse_worker_busy,
    parse_worker_dequeued_accepted_at,
    parse_worker_in_flight,
    worker_reading,
)
from infermodes.operator.modes.base import Signals, never_ends
from infermodes.operator.objects import (
    EndpointRef,
    Ingress,
    deployment,
    env_list,
    guarded,
    liveness_probe,
    resources,
)
from infermodes.operator.observed import (
    failure,
    running_pods,
    waiting_status,
)
from infermodes.settings import WorkerSettings

COMPONENT = "async-worker"
WORKLOAD = ("apps/v1", "Deployment")
METRICS_PORT = 9090
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def replicas(spec: s.EndpointSpec, signals: Signals, memory: ScalerMemory) -> int:
    if signals.name_held_by() is not None:
        return 0  # its workers would consume the other endpoint's requests
    workload = signals.workload
    block = async_block(spec)
    if not workload.exists:  # a new pool starts at its initialReplicas (the broker unread)
        return backlog_replicas(block, None, None, None, memory, signals.now).replicas
    current = workload.replicas
    figures = pool_figures(spec, signals).figures or QueueFigures(None, None)
    return backlog_replicas(
        block,
        current,
        figures.ready,
        figures.in_flight,
        memory,
        signals.now,
        figures.consumers,
        figures.waiting_webhooks,
    ).replicas


@dataclass(frozen=True)
class PoolFigures:
    """The queue as the scaler reads it (None: the broker cannot be read), and the running
    workers that could not say what they hold (their in-flight count is then unknown)."""

    figures: QueueFigures | None
    silent: tuple[str, ...] = ()


def pool_figures(spec: s.EndpointSpec, signals: Signals) -> PoolFigures:
    """The broker's figures, with the in-flight count checked against the workers' own
    (``scaling.pool_in_flight``). The decision and the status both read this, from the same
    once-per-reconcile readings, so they agree."""
    figures = signals.backlog()
    if figures is None:
        return PoolFigures(None)
    workload = signals.workload
    # its replicas, not its running pods: a rollout's surge pod, loading its model, cannot say
    # what it holds, and the decision shrinks nothing below the replicas anyway
    pool = workload.replicas if workload.exists else 0
    held = pool_in_flight(
        async_block(spec),
        figures.ready,
        figures.in_flight,
        pool,
        lambda: worker_readings(signals, parse_worker_in_flight),
    )
    return PoolFigures(dataclasses.replace(figures, in_flight=held.count), held.silent)


def worker_readings(
    signals: Signals, parse: Callable[[str], float | None]
) -> dict[str, float | None]:
    """One figure of each running worker, by pod name (None: it cannot say)."""
    running = running_pods(signals.pods)
    texts = signals.fetch_metrics(tuple(ip for _, ip in running), METRICS_PORT)
    return {name: worker_reading(texts.get(ip), parse) for name, ip in running}


def with_oldest_age(figures: QueueFigures | None, signals: Signals) -> QueueFigures | None:
    """The broker's figures, with the oldest waiting request's age estimated from the running
    workers when the broker does not report it (``status.with_estimated_age``)."""
    if figures is None:
        return None
    taken = lambda: worker_readings(signals, parse_worker_dequeued_accepted_at).values()  # noqa: E731
    return with_estimated_age(figures, taken, signals.wall)


def not_consuming(signals: Signals) -> str:
    """A note naming the workers whose container runs but which are not ready: loading their
    model, or not consuming (a worker is ready only while it consumes its queue), which a
    rollout waits for and nothing else would show."""
    pods = signals.workload.pods
    waiting = sorted(pod.name for pod in pods if pod.running and pod.ip and not pod.ready)
    if not waiting:
        return ""
    return (
        f"; not ready: {', '.join(waiting)} (loading the model, or not consuming the queue: "
        "the broker down, or refusing the login of the broker Secret's URL, or the worker "
        "finishing what it held when its broker connection was lost; the pod's log says)"
    )


ended = never_ends


def pod_annotations(
    spec: s.EndpointSpec, signals: Signals, replicas: int
) -> dict[str, dict[str, str]]:
    """Each running worker's ``removal_cost`` (its requests and its webhook jobs in flight;
    one that cannot say, the most) as its deletion cost, when the pool shrinks: the
    ReplicaSet removes the pods of lowest cost first, so idle workers go before busy ones (a
    webhook job of one removed would only go back to the outbox, but its POST would be made
    again), in the order ``infermodes up`` stops its workers (``workers_to_remove``)."""
    if replicas >= signals.workload.replicas:
        return {}
    held = worker_readings(signals, parse_worker_busy)
    return {name: {DELETION_COST: str(removal_cost(count))} for name, count in held.items()}


def desired_objects(
    ref: EndpointRef,
    spec: s.EndpointSpec,
    replicas: int,
    image: str,
    ingress: Ingress | None = None,
) -> list[dict[str, Any]]:
    """The worker Deployment; with ``ingress``, a NetworkPolicy letting only the metrics'
    readers (the operator's in-flight counts) reach its metrics port, its one port."""
    block = async_block(spec)
    plan = worker(ref.name, spec)
    env = env_list(WorkerSettings, "metrics_host", plan)
    env.append({"name": env_name(WorkerSettings, "namespace"), "value": ref.namespace})
    # pinned (an env entry wins over the storage Secret's envFrom): the readiness probe and
    # the operator's in-flight readings reach this port
    env.append({"name": env_name(WorkerSettings, "metrics_port"), "value": str(METRICS_PORT)})
    notification = block.notification
    from_secrets = {
        "broker_url": block.broker_secret_ref,
        "secret_success_webhook_url": notification.success_webhook_secret_ref,
        "secret_error_webhook_url": notification.error_webhook_secret_ref,
    }
    env.extend(
        {
            "name": env_name(WorkerSettings, field),
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
        }
        for field, ref in from_secrets.items()
        if ref is not None
    )
    container: dict[str, Any] = {
        "name": "worker",
        "image": spec.image or image,
        "command": list(plan.command),
        "env": env,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        # ready once the model is loaded (the metrics port opens then) and while the worker
        # consumes its queue: a rollout keeps the old workers until the new ones have loaded
        # their model and reached the broker (a model that cannot load, or a broker Secret
        # that does not let them in, never gets there)
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": "metrics"},
            "periodSeconds": WORKER_READY_PERIOD_SECONDS,
            # answered by a Python thread: a worker parsing big JSON inputs holds the GIL
            "timeoutSeconds": 5,
            "failureThreshold": WORKER_READY_FAILURE_THRESHOLD,
        },
        # the port opens once the model is loaded: liveness waits for it (up to 30 minutes)
        "startupProbe": {
            "tcpSocket": {"port": "metrics"},
            "periodSeconds": 2,
            "failureThreshold": 900,
        },
        # restarted once its consumer's loop, or its webhook outbox's, has stopped turning
        # (liveness_stall_seconds, then 3 failed probes): never for invocations or webhook
        # POSTs however long, which run on their pools
        "livenessProbe": liveness_probe("metrics"),
        "resources": resources(block.resources),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.storage_secret_ref is not None:
        container["envFrom"] = [{"secretRef": {"name": spec.storage_secret_ref.name}}]
    workers = deployment(ref, COMPONENT, replicas, container, WORKER_STOP_GRACE_SECONDS)
    peers = None if ingress is None else ingress.metrics
    return guarded([workers], ref, COMPONENT, METRICS_PORT, peers)


def observe(spec: s.EndpointSpec, signals: Signals, previous: Status | None) -> Status:
    """``Creating`` while a new pool's initial workers start (``status.pool_starting``); then
    how it stands (``status.pool_standing``, as ``infermodes up`` says it): ``InService``
    while the queue accepts work, also at zero workers, ``Updating`` while a spec change rolls
    out over a pool that served (the broker read or not), the reason saying how the pool
    stands (``Idle``, ``Processing``, ``RollingOut``; ``BrokerUnreadable`` and
    ``InFlightUnknown``: the pool is not scaled in, and the message says why). Workers that
    cannot run make it ``Failed`` only while none serves: a new spec's, beside old ones that
    consume, leave it ``Updating`` (as a realtime endpoint's), added ones ``InService``, the
    reason saying why."""
    workload = signals.workload
    held = signals.name_held_by() is not None
    read = PoolFigures(None) if held else pool_figures(spec, signals)  # not its own queue
    figures = with_oldest_age(read.figures, signals)
    problem = failure(workload, ready_needs_broker=True)
    if held:
        status = workload.status(
            s.Phase.FAILED,
            NAME_IN_USE,
            "an async endpoint of this name in another namespace, created earlier, holds the "
            "name's queue (one RabbitMQ queue per name): this one runs no workers until it "
            "holds the name alone; rename one of them",
        )
    elif problem is not None and workload.ready == 0:
        status = workload.status(s.Phase.FAILED, problem[0], problem[1])
    elif problem is not None and not workload.rolled_out:  # the new spec's workers cannot run
        message = update_blocked(problem[1], workload.ready)  # the old ones consume: Updating,
        status = workload.status(s.Phase.UPDATING, problem[0], message)  # as realtime's
    elif problem is not None:  # workers added to a serving pool cannot run (a scale-out)
        message = f"{problem[1]}; {workload.ready}/{workload.replicas} workers serve"
        status = workload.status(s.Phase.IN_SERVICE, problem[0], message)
    elif not workload.exists:
        status = Status(s.Phase.CREATING, "Creating", "creating the worker pool")
    elif (starting := pool_starting(async_block(spec).first_replicas(), workload.replicas,
                                    workload.ready, served(previous))) is not None:  # fmt: skip
        status = waiting_status(workload, *starting)  # Unschedulable, FailedCreate named
    else:
        # a spec change rolling out over a pool that served: Updating, as a realtime
        # endpoint's and as `infermodes up` says it (the queue accepts throughout)
        rolling = served(previous) and not workload.rolled_out
        workers = f"{workload.ready}/{workload.replicas} workers" + not_consuming(signals)
        if rolling:
            workers += f", {workload.updated} of the new spec created"
        standing = pool_standing(figures, workload.replicas, rolling, read.silent, workers)
        # a stall (Unschedulable, FailedCreate) is named, but not over an unread broker
        status = (waiting_status(workload, *standing) if figures is not None
                  else workload.status(*standing))  # fmt: skip
    return Status(
        status.phase,
        status.reason,
        status.message,
        status.replicas,
        status.ready_replicas,
        status.desired_replicas,
        backlog=figures,
        backlog_unread=not held and read.figures is None,
    )
