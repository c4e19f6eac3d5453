"""Async: the worker Deployment for every field, replicas from the backlog, idle workers
removed first on scale-in, and the status with the queue's figures."""

import dataclasses
import logging

import pytest
from prometheus_client import CollectorRegistry

from infermodes.endpoints import spec as s
from infermodes.endpoints.async_plan import async_block
from infermodes.endpoints.demand import Demand
from infermodes.endpoints.scaling import ScalerMemory, scale_out_due
from infermodes.endpoints.status import (
    BROKER_UNREADABLE,
    BatchOutput,
    QueueFigures,
    Status,
    oldest_age_from_dequeues,
    pool_standing,
    pool_starting,
    record_queue,
    still_served,
)
from infermodes.metrics import DEQUEUED_ACCEPTED_AT as DEQUEUED
from infermodes.metrics import OperatorMetrics
from infermodes.operator.kube import KubeError
from infermodes.operator.modes import async_
from infermodes.operator.modes.base import Signals
from infermodes.operator.observed import PodState, WorkloadState
from infermodes.operator.reconcile import Deps, reconcile
from infermodes.operator.signals.backlog import look_wants_more, read_backlog, read_ready
from infermodes.operator.signals.names import AsyncNames, holder_elsewhere
from infermodes.queueing.broker import Backlog, outbox_name
from infermodes.queueing.rabbitmq import QueueReader, queue_name
from infermodes.settings import MAX_INVOCATION_TIMEOUT_SECONDS, OperatorSettings
from tests.unit.operator.test_realtime import REF, SPEC_SECRETS, FakeKube, body, check_golden

FULL_SPEC = {
    "mode": "async",
    "model": {"uri": "s3://models/abalone/model.tar.gz"},
    "storageSecretRef": {"name": "s3-credentials"},
    "async": {
        "outputPath": "s3://results/abalone/out",
        "failurePath": "s3://results/abalone/failed",
        "inputPath": "s3://results/abalone/in",
        "maxConcurrentInvocationsPerInstance": 3,
        "invocationTimeoutSeconds": 120,
        "maxAttempts": 5,
        "minReplicas": 0,
        "maxReplicas": 6,
        "targetBacklogPerInstance": 4,
        "scaleInCooldownSeconds": 30,
        "brokerSecretRef": {"name": "rabbit", "key": "amqp"},
        "notification": {"topic": True, "successWebhook": "http://127.0.0.1:9/ok",
                         "errorWebhook": "http://127.0.0.1:9/err"},
        "resources": {"cpu": "500m", "memory": "768Mi"},
    },
}  # fmt: skip
SPEC = s.EndpointSpec.model_validate(FULL_SPEC)


def signals(
    workload: WorkloadState,
    figures: QueueFigures | None,
    pods: list | None = None,
    metrics: dict | None = None,
    now: float = 1000.0,
) -> Signals:
    if pods and not workload.pods:  # as the operator reads them: one list of pods for both
        workload = dataclasses.replace(workload, pods=[PodState.from_pod(p) for p in pods])
    return Signals(
        workload, {} if workload.exists else None, pods or [], dict,
        lambda ips, port: {ip: (metrics or {}).get(ip) for ip in ips}, lambda: figures,
        Demand(), now, now, True,
    )  # fmt: skip


def test_every_async_field_reaches_the_deployment() -> None:
    objects = async_.desired_objects(REF, SPEC, 2, "default:img")
    check_golden("async-full.yaml", objects)
    env = {e["name"]: e for e in objects[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["INFERMODES_WORKER_BROKER_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "rabbit",
        "key": "amqp",
    }  # the URL itself never appears in the spec or the objects
    # a request may set a longer timeout than the endpoint's (120 s here): up to the maximum
    grace = objects[0]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= MAX_INVOCATION_TIMEOUT_SECONDS + 30


def test_replicas_from_the_backlog_with_in_flight_counted() -> None:
    memory = ScalerMemory()
    zero = WorkloadState(True, 0, 0, 0, True)
    assert async_.replicas(SPEC, signals(zero, QueueFigures(9, 0)), memory) == 3
    busy = WorkloadState(True, 3, 3, 3, True)
    assert async_.replicas(SPEC, signals(busy, QueueFigures(0, 9), now=5000), memory) == 3
    assert async_.replicas(SPEC, signals(busy, None, now=9000), memory) == 3  # broker unreadable


def test_a_new_pool_starts_at_its_initial_replicas() -> None:
    """Its Deployment is made with initialReplicas workers (minReplicas was taken: 0)."""
    started = s.EndpointSpec.model_validate(
        {**FULL_SPEC, "async": {**FULL_SPEC["async"], "initialReplicas": 2}}
    )
    none = WorkloadState(False, 0, 0, 0, False)
    assert async_.replicas(started, signals(none, QueueFigures(0, 0)), ScalerMemory()) == 2
    assert async_.replicas(SPEC, signals(none, QueueFigures(0, 0)), ScalerMemory()) == 0


def pod(
    name: str, ip: str, phase: str = "Running", state: str = "running", ready: bool = True
) -> dict:
    conditions = [{"type": "Ready", "status": str(ready and state == "running")}]
    return {
        "metadata": {"name": name},
        "status": {"podIP": ip, "phase": phase, "containerStatuses": [{"state": {state: {}}}],
                   "conditions": conditions},
    }  # fmt: skip


def test_an_empty_queue_lets_the_pool_go_only_when_its_workers_hold_nothing() -> None:
    """The management API samples the queue: it may say 0 ready, 0 unacknowledged while the
    workers hold deliveries. Before the pool shrinks, their own counts are asked."""
    one = WorkloadState(True, 1, 1, 1, True)
    pods = [pod("a", "127.0.0.1"), pod("evicted", "127.0.0.9", "Failed"),
            pod("crash-looping", "127.0.0.8", state="waiting")]  # fmt: skip
    busy = {"127.0.0.1": "infermodes_async_in_flight 3.0\n",
            "127.0.0.9": "infermodes_async_in_flight 0.0\n"}  # fmt: skip
    idle = {"127.0.0.1": "infermodes_async_in_flight 0.0\n"}
    memory = ScalerMemory()  # the last change long ago: the cooldown (30 s) has passed
    for now in (1000.0, 2000.0):
        assert async_.replicas(SPEC, signals(one, QueueFigures(0, 0), pods, busy, now), memory) == 1
        assert memory.empty_since is None  # held work is not an empty backlog
    assert async_.replicas(SPEC, signals(one, QueueFigures(0, 0), pods, idle, 3000.0), memory) == 1
    assert async_.replicas(SPEC, signals(one, QueueFigures(0, 0), pods, idle, 3030.0), memory) == 0


@pytest.mark.parametrize(
    "text",
    [None, "", "infermodes_async_in_flight NaN\n", "infermodes_async_in_flight -1.0\n",
     "not the exposition format {\n"],
    ids=["unreachable", "no figure", "nan", "negative", "garbage"],
)  # fmt: skip
def test_a_worker_that_cannot_say_what_it_holds_keeps_the_pool(text: str | None) -> None:
    """In flight unknown: the pool is not scaled in, as when the broker cannot say."""
    two = WorkloadState(True, 2, 2, 2, True)
    pods = [pod("idle", "127.0.0.1"), pod("silent", "127.0.0.2")]
    metrics = {"127.0.0.1": "infermodes_async_in_flight 0.0\n", "127.0.0.2": text}
    memory = ScalerMemory()
    for now in (1000.0, 5000.0):
        assert (
            async_.replicas(SPEC, signals(two, QueueFigures(0, 0), pods, metrics, now), memory) == 2
        )


def test_a_silent_worker_with_requests_waiting_is_counted_at_its_full_prefetch() -> None:
    """The look asks for a second worker (2 waiting + 3 the one consumer holds, at 4 per
    instance), and the reconcile, with in flight unknown (no management API, the worker
    silent), decides the same instead of leaving the look to ask every second."""
    one = WorkloadState(True, 1, 1, 1, True)
    pods = [pod("silent", "127.0.0.1")]
    waiting = QueueFigures(ready=2, in_flight=None, consumers=1)
    assert scale_out_due(async_block(SPEC), 1, 2, 1)
    assert async_.replicas(SPEC, signals(one, waiting, pods, {}), ScalerMemory()) == 2


def test_the_status_says_which_workers_cannot_say_what_they_hold() -> None:
    """The decision and the status read the same figures: a pool kept because a worker is
    silent says so, by name, with the reason ``InFlightUnknown`` (an Event with it)."""
    two = WorkloadState(True, 2, 2, 2, True)
    pods = [pod("idle", "127.0.0.1"), pod("silent", "127.0.0.2")]
    metrics = {"127.0.0.1": "infermodes_async_in_flight 0.0\n"}
    kept = async_.observe(SPEC, signals(two, QueueFigures(0, 0), pods, metrics), None)
    assert (kept.reason, kept.backlog) == ("InFlightUnknown", QueueFigures(0, None, 0.0))
    assert "worker(s) silent cannot say what they hold" in kept.message
    assert "the queue's figures scale the pool in only once they can" in kept.message
    metrics["127.0.0.2"] = "infermodes_async_in_flight 3.0\n"  # more than the sampled 0
    held = async_.observe(SPEC, signals(two, QueueFigures(0, 0), pods, metrics), None)
    assert (held.reason, held.backlog) == ("Processing", QueueFigures(0, 3, 0.0))
    assert held.message == "0 queued, 3 in flight; 2/2 workers"
    # a third worker the API refuses: said too, its reason first
    three = WorkloadState(True, 3, 2, 3, True, replica_failure="exceeded quota: pods")
    del metrics["127.0.0.2"]
    stalled = async_.observe(SPEC, signals(three, QueueFigures(0, 0), pods, metrics), None)
    assert stalled.reason == "FailedCreate"
    assert "worker(s) silent cannot say what they hold" in stalled.message
    assert stalled.message.endswith("pods cannot be created: exceeded quota: pods")


def test_the_status_names_the_running_workers_that_are_not_ready() -> None:
    """A worker is ready only while it consumes its queue: one the broker refuses holds up a
    rollout, and the status says which (a crash-looping or failed pod is reported otherwise)."""
    two = WorkloadState(True, 2, 1, 2, False)
    pods = [pod("serving", "127.0.0.1"), pod("refused", "127.0.0.2", ready=False),
            pod("crash-looping", "127.0.0.3", state="waiting"),
            pod("evicted", "127.0.0.4", "Failed", ready=False)]  # fmt: skip
    idle = {ip: "infermodes_async_in_flight 0.0\n" for ip in ("127.0.0.1", "127.0.0.2")}
    status = async_.observe(SPEC, signals(two, QueueFigures(5, 0), pods, idle), None)
    assert status.reason == "Processing"
    assert status.message.startswith("5 queued, 0 in flight; 1/2 workers; not ready: refused (")
    assert "refusing the login of the broker Secret's URL" in status.message
    every = [pod("a", "127.0.0.1"), pod("b", "127.0.0.2")]
    ready = async_.observe(SPEC, signals(two, QueueFigures(5, 0), every, idle), None)
    assert "not ready" not in ready.message


def test_a_new_pool_is_creating_until_its_initial_workers_are_ready() -> None:
    """The endpoint was InService with no worker ready right after its create (the platform's
    async variant is InService once its InitialInstanceCount instances run). Creating until
    they are, or until the pool wants fewer; InService at zero for a pool started there, and
    for one that served (its workers restarting, say)."""
    started = s.EndpointSpec.model_validate(
        {**FULL_SPEC, "async": {**FULL_SPEC["async"], "initialReplicas": 2}}
    )
    figures = QueueFigures(0, 0)

    def look(replicas: int, ready: int, previous: Status | None = None) -> Status:
        workload = WorkloadState(True, replicas, ready, replicas, True)
        return async_.observe(started, signals(workload, figures), previous)

    starting = look(2, 1)
    assert (starting.phase, starting.reason) == (s.Phase.CREATING, "StartingWorkers")
    assert starting.message == "1/2 initial workers ready; requests queue"
    assert (starting.ready_replicas, starting.desired_replicas) == (1, 2)
    assert look(2, 2).phase is s.Phase.IN_SERVICE
    assert look(0, 0).phase is s.Phase.IN_SERVICE  # scaled in before they were ready
    assert look(2, 0, look(2, 2)).phase is s.Phase.IN_SERVICE
    at_zero = async_.observe(SPEC, signals(WorkloadState(True, 0, 0, 0, True), figures), None)
    assert at_zero.phase is s.Phase.IN_SERVICE
    # a worker no node can take: the start says why its workers do not come, as before it
    unplaced = PodState("w", None, False, unschedulable="0/1 nodes are available")
    workload = WorkloadState(True, 2, 1, 2, True, [unplaced])
    stalled = async_.observe(started, signals(workload, figures), None)
    assert (stalled.phase, stalled.reason) == (s.Phase.CREATING, "Unschedulable")
    assert stalled.message == (
        "1/2 initial workers ready; requests queue; pod w cannot be scheduled: 0/1 nodes are "
        "available"
    )


@pytest.mark.parametrize(
    ("looks", "said"),
    [
        pytest.param(  # every look of a pool of 2 whose workers never come: Creating throughout
            [(2, 2, 0), (2, 2, 0), (2, 2, 1)],
            ["0/2", "0/2", "1/2"],
            id="no-worker-ever-ready",
        ),
        pytest.param(  # ready once: in service, also scaled to zero and out again after it
            [(2, 2, 1), (2, 2, 2), (2, 0, 0), (2, 1, 0)],
            ["1/2", None, None, None],
            id="ready-once-then-scaled-to-zero",
        ),
        pytest.param(  # scaled in before its workers were: the start ends at what it wants
            [(2, 2, 0), (2, 1, 1), (2, 0, 0)],
            ["0/2", None, None],
            id="scaled-in-while-starting",
        ),
        pytest.param(  # initialReplicas 1 -> 3 while starting: still a start, of the new spec
            [(1, 1, 0), (3, 3, 0), (3, 3, 2), (3, 3, 3)],
            ["0/1", "0/3", "2/3", None],
            id="spec-update-while-starting",
        ),
        pytest.param(  # one of 2 crashes: the start goes on; the crash rule says Failed (None:
            # not served, so the start resumes once it is back), until both are ready
            [(2, 2, 1), (2, 2, 0), None, (2, 2, 1), (2, 2, 2), (2, 2, 1)],
            ["1/2", "0/2", "Failed", "1/2", None, None],
            id="worker-crashing-while-starting",
        ),
        pytest.param(  # started at zero (initialReplicas unset, minReplicas 0): in service
            [(0, 0, 0), (0, 1, 0), (0, 1, 1)],
            [None, None, None],
            id="started-at-zero",
        ),
    ],
)
def test_one_rule_says_when_an_async_pool_is_starting(
    looks: list[tuple[int, int, int] | None], said: list[str | None]
) -> None:
    """``status.pool_starting`` at its edges, look after look ((initial, wanted, ready)
    workers), each look's ``served`` being what the look before it said (InService or
    Updating), as both actuators gather it: the operator from the status it wrote,
    ``infermodes up`` from the one it showed. A look of None is one a worker's crashes failed
    (the crash rule, which both ask first)."""
    previous: s.Phase | None = None
    shown: list[str | None] = []
    for look in looks:
        served = previous in (s.Phase.IN_SERVICE, s.Phase.UPDATING)
        if look is None:
            previous = s.Phase.FAILED
            shown.append("Failed")
            continue
        initial, wanted, ready = look
        starting = pool_starting(initial, wanted, ready, served)
        if starting is None:
            previous = s.Phase.IN_SERVICE
            shown.append(None)
            continue
        phase, reason, message = starting
        assert (phase, reason) == (s.Phase.CREATING, "StartingWorkers")
        previous = phase
        shown.append(message.split(" ")[0])
    assert shown == said


def test_a_pool_that_served_is_never_starting_again() -> None:
    """What ``infermodes up`` said beside the operator: StartingWorkers (Updating) after a new
    spec or a changed initialReplicas over a pool in service. The operator says a rollout
    (Updating, RollingOut) or a scale (InService) there, never a start."""
    for initial, wanted, ready in [(2, 2, 0), (3, 3, 1), (1, 4, 0)]:
        assert pool_starting(initial, wanted, ready, served=True) is None
    assert pool_starting(3, 3, 1, served=False) == (
        s.Phase.CREATING, "StartingWorkers", "1/3 initial workers ready; requests queue"
    )  # fmt: skip


def test_workers_the_api_refuses_are_named_with_the_backlog() -> None:
    """A quota refusing the workers' pods leaves the queue growing: the status says why."""
    refused = WorkloadState(True, 1, 0, 0, False, replica_failure="exceeded quota: pods")
    status = async_.observe(SPEC, signals(refused, QueueFigures(7, 0)), None)
    assert (status.phase, status.reason) == (s.Phase.IN_SERVICE, "FailedCreate")
    assert status.message == (
        "7 queued, 0 in flight; 0/1 workers; pods cannot be created: exceeded quota: pods"
    )


def test_without_the_management_api_the_workers_say_what_is_in_flight() -> None:
    """AMQP alone counts ready messages only; the workers' counts let the pool scale in (and
    keep it while they hold work) instead of never shrinking."""
    two = WorkloadState(True, 2, 2, 2, True)
    pods = [pod("a", "127.0.0.1"), pod("b", "127.0.0.2")]
    metrics = {"127.0.0.1": "infermodes_async_in_flight 0.0\n",
               "127.0.0.2": "infermodes_async_in_flight 1.0\n"}  # fmt: skip
    memory = ScalerMemory()
    busy = signals(two, QueueFigures(0, None), pods, metrics, now=1000.0)
    assert async_.replicas(SPEC, busy, memory) == 1  # one request held: one worker stays
    assert async_.observe(SPEC, busy, None).backlog == QueueFigures(0, 1, 0.0)
    metrics["127.0.0.2"] = "infermodes_async_in_flight 0.0\n"
    for now in (2000.0, 2030.0):  # empty for the cooldown (30 s), then zero
        assert async_.replicas(SPEC, signals(two, QueueFigures(0, None), pods, metrics, now),
                               memory) == (2 if now == 2000.0 else 0)  # fmt: skip


def test_a_stale_unacknowledged_count_gives_way_to_what_the_workers_hold() -> None:
    """The broker's sample says 1 in flight while three workers hold one each: the larger
    count is used, so busy workers are not scaled in on a stale figure."""
    three = WorkloadState(True, 3, 3, 3, True)
    pods = [pod(name, f"127.0.0.{n}") for n, name in enumerate("abc", 1)]
    metrics = {f"127.0.0.{n}": "infermodes_async_in_flight 4.0\n" for n in (1, 2, 3)}
    memory = ScalerMemory()
    assert async_.replicas(SPEC, signals(three, QueueFigures(0, 1), pods, metrics), memory) == 3
    starting = pods[:1]  # three replicas, one of them running: the pool is still 3 workers
    one_busy = {"127.0.0.1": "infermodes_async_in_flight 12.0\n"}
    assert async_.replicas(SPEC, signals(three, QueueFigures(0, 1), starting, one_busy),
                           ScalerMemory()) == 3  # fmt: skip


def test_the_workers_are_not_asked_when_the_pool_cannot_shrink() -> None:
    at_floor = s.EndpointSpec.model_validate(
        {**FULL_SPEC, "async": {**FULL_SPEC["async"], "minReplicas": 2}}
    )
    asked: list[tuple[str, ...]] = []

    def fetch(ips: tuple[str, ...], port: int) -> dict[str, str]:
        asked.append(ips)
        return {ip: "infermodes_async_in_flight 0.0\n" for ip in ips}

    two = WorkloadState(True, 2, 2, 2, True)
    pods = [pod("a", "127.0.0.1"), pod("b", "127.0.0.2")]
    observed = dataclasses.replace(signals(two, QueueFigures(0, 0), pods), fetch_metrics=fetch)
    assert async_.replicas(at_floor, observed, ScalerMemory()) == 2
    busy = dataclasses.replace(signals(two, QueueFigures(5, 3), pods), fetch_metrics=fetch)
    assert async_.replicas(SPEC, busy, ScalerMemory()) == 2  # 8 at 4 each: no shrink either
    assert asked == []
    async_.replicas(SPEC, observed, ScalerMemory())  # minReplicas 0: the pool could shrink
    assert asked == [("127.0.0.1", "127.0.0.2")]


def test_idle_workers_are_marked_cheapest_to_remove_on_scale_in_and_silent_ones_dearest() -> None:
    metrics = {
        "127.0.0.1": "infermodes_async_in_flight 2.0\n",
        "127.0.0.2": "infermodes_async_in_flight 0.0\n",
        # a webhook job being POSTed: removed, its POST would be made again by another
        "127.0.0.4": "infermodes_async_in_flight 0.0\n"
        "infermodes_async_webhook_jobs_in_flight 1.0\n",
    }
    pods = [pod("busy", "127.0.0.1"), pod("idle", "127.0.0.2"), pod("silent", "127.0.0.3"),
            pod("posting", "127.0.0.4")]  # fmt: skip
    four = WorkloadState(True, 4, 4, 4, True)
    shrinking = async_.pod_annotations(SPEC, signals(four, QueueFigures(0, 2), pods, metrics), 1)
    assert shrinking == {
        "busy": {async_.DELETION_COST: "2"},
        "idle": {async_.DELETION_COST: "0"},
        "posting": {async_.DELETION_COST: "1"},
        # it may hold a full prefetch: counted busier than any that can say, as up counts it
        "silent": {async_.DELETION_COST: "2147483647"},
    }
    steady = async_.pod_annotations(SPEC, signals(four, QueueFigures(0, 2), pods, metrics), 4)
    assert steady == {}


@pytest.mark.parametrize(
    ("figures", "replicas", "rolling_out", "silent", "said"),
    [
        (QueueFigures(0, 0), 0, False, (), (s.Phase.IN_SERVICE, "Idle")),
        (QueueFigures(0, 0), 1, False, (), (s.Phase.IN_SERVICE, "Processing")),  # a worker
        (QueueFigures(1, 0), 0, False, (), (s.Phase.IN_SERVICE, "Processing")),  # one queued
        (QueueFigures(0, 1), 0, False, (), (s.Phase.IN_SERVICE, "Processing")),  # one held
        (QueueFigures(0, None), 0, False, (), (s.Phase.IN_SERVICE, "Processing")),  # unknown
        (QueueFigures(0, 0), 0, True, (), (s.Phase.UPDATING, "RollingOut")),
        (QueueFigures(0, 0), 2, True, ("w",), (s.Phase.UPDATING, "InFlightUnknown")),
        (QueueFigures(0, 0), 2, False, ("w",), (s.Phase.IN_SERVICE, "InFlightUnknown")),
        (None, 2, False, ("w",), (s.Phase.IN_SERVICE, "BrokerUnreadable")),
        (None, 2, True, (), (s.Phase.UPDATING, "BrokerUnreadable")),  # the rollout goes on
    ],
)
def test_one_rule_says_how_an_async_pool_stands(
    figures: QueueFigures | None,
    replicas: int,
    rolling_out: bool,
    silent: tuple[str, ...],
    said: tuple[s.Phase, str],
) -> None:
    """``status.pool_standing`` at its edges, as both actuators say it past a pool's start: the
    phase is the workers' (Updating while a new spec's replace them, the broker read or not),
    the reason names the broker first (``infermodes up`` showed its scaling decision's reason,
    InitialReplicas or Steady, and the operator said InService while its broker was unread
    during a rollout)."""
    phase, reason, message = pool_standing(figures, replicas, rolling_out, silent, "1/2 workers")
    assert (phase, reason) == said
    assert message.endswith("; 1/2 workers")


def test_an_endpoint_that_failed_has_not_served_whatever_it_did_before() -> None:
    """``status.still_served``: a Failed look ends what an endpoint served, so workers coming
    back after it are a start (Creating), as the operator, which asks its last status, says;
    ``infermodes up`` said Updating (InService) for a replaced pool that failed and recovered."""
    for phase in s.Phase:
        assert still_served(True, phase) is (phase is not s.Phase.FAILED)
        assert not still_served(False, phase)


def test_an_async_rollout_while_the_broker_cannot_be_read_is_updating_naming_the_broker() -> None:
    """The operator said InService (BrokerUnreadable) while a new spec's workers replaced those
    of a pool that served, the broker unread: Updating now, the reason naming the broker."""
    rolling = WorkloadState(True, 2, 1, 1, False)
    served = Status(s.Phase.IN_SERVICE, "Processing")
    blind = async_.observe(SPEC, signals(rolling, None), served)
    assert (blind.phase, blind.reason) == (s.Phase.UPDATING, BROKER_UNREADABLE)
    assert blind.message.endswith("1/2 workers, 1 of the new spec created")
    seen = async_.observe(SPEC, signals(rolling, QueueFigures(0, 0)), served)
    assert (seen.phase, seen.reason) == (s.Phase.UPDATING, "RollingOut")


def test_status_carries_the_backlog_and_says_when_the_broker_is_unreadable() -> None:
    idle = async_.observe(SPEC, signals(WorkloadState(True, 0, 0, 0, True), QueueFigures(0, 0)),
                          None)  # fmt: skip
    assert (idle.phase, idle.reason) == (s.Phase.IN_SERVICE, "Idle")
    assert idle.to_patch(1, None)["backlog"] == {"ready": 0, "inFlight": 0, "total": 0,
                                                 "oldestAgeSeconds": 0.0,
                                                 "waitingWebhookJobs": 0}  # fmt: skip
    busy = async_.observe(SPEC, signals(WorkloadState(True, 2, 2, 2, True), QueueFigures(5, 6)),
                          None)  # fmt: skip
    assert busy.reason == "Processing" and "5 queued, 6 in flight" in busy.message
    blind = async_.observe(SPEC, signals(WorkloadState(True, 2, 2, 2, True), None), None)
    assert (blind.phase, blind.reason, blind.replicas) == (s.Phase.IN_SERVICE,
                                                           "BrokerUnreadable", 2)  # fmt: skip
    # the figures read before are removed (a merge patch's null), not left as if current
    assert blind.to_patch(1, busy.to_patch(1, None))["backlog"] is None
    assert "backlog" not in blind.to_patch(1, None)
    assert blind.backlog_unread and not busy.backlog_unread  # counted as a failed reading
    crashing = WorkloadState(
        True, 2, 0, 2, True, [PodState("w", None, False, waiting_reason="ErrImagePull")]
    )
    failed_blind = async_.observe(SPEC, signals(crashing, None), None)
    assert failed_blind.phase is s.Phase.FAILED and failed_blind.backlog_unread


def test_workers_not_ready_while_the_broker_is_down_are_not_crashing_whatever_restarts() -> None:
    """A worker is ready only while it consumes: in a broker outage every worker is not ready.
    One that restarted before (OOM-killed three times, say) and runs now is not crash-looping;
    one whose container waits in its back-off is."""
    restarted = {"restartCount": 3, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}  # fmt: skip
    runs = pod("oom-killed-before", "127.0.0.1", ready=False)
    runs["status"]["containerStatuses"] = [restarted]
    one = WorkloadState(True, 1, 0, 1, True)
    blind = async_.observe(SPEC, signals(one, None, [runs]), None)
    assert (blind.phase, blind.reason) == (s.Phase.IN_SERVICE, BROKER_UNREADABLE)
    backing_off = {**restarted, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    runs["status"]["containerStatuses"] = [backing_off]
    crashing = async_.observe(SPEC, signals(one, None, [runs]), None)
    assert (crashing.phase, crashing.reason) == (s.Phase.FAILED, "ContainerCrashing")


def test_a_worker_that_cannot_load_its_model_fails_the_pool_even_in_the_moment_it_runs() -> None:
    """Restarted to try again, a worker runs a moment before it exits 3 again: running is not
    alive for a model that cannot load (the status flipped to InService each time); ready is."""
    again = {"restartCount": 2, "state": {"running": {}},
             "lastState": {"terminated": {"exitCode": 3, "message": "no such object"}}}  # fmt: skip
    trying = pod("retrying", "127.0.0.1", ready=False)
    trying["status"]["containerStatuses"] = [again]
    one = WorkloadState(True, 1, 0, 1, True)
    status = async_.observe(SPEC, signals(one, None, [trying]), None)
    assert (status.phase, status.reason) == (s.Phase.FAILED, "ModelLoadFailed")
    loaded = pod("retrying", "127.0.0.1", ready=True)  # it consumes: its model loaded
    loaded["status"]["containerStatuses"] = [again]
    status = async_.observe(SPEC, signals(WorkloadState(True, 1, 1, 1, True), None, [loaded]), None)
    assert status.phase is s.Phase.IN_SERVICE


def test_workers_whose_login_the_broker_refused_say_so_failed_alone_updating_beside_old_ones() -> (
    None
):
    """A worker the broker keeps refusing exits 5: the endpoint said InService with 0 workers
    (only a pod's log said why) and its workers, reading the Secret at start, never recovered."""
    exited = {"terminated": {"exitCode": 5, "message": "ACCESS_REFUSED"}}
    refused = {"restartCount": 1, "state": {"running": {}}, "lastState": exited}
    worker = pod("refused", "127.0.0.2", ready=False)
    worker["status"]["containerStatuses"] = [refused]
    alone = WorkloadState(True, 1, 0, 1, True)
    status = async_.observe(SPEC, signals(alone, QueueFigures(3, 0), [worker]), None)
    assert (status.phase, status.reason) == (s.Phase.FAILED, "BrokerLoginRefused")
    assert "worker refused" in status.message and "Secret" in status.message, status.message
    rolling = WorkloadState(True, 1, 1, 1, False)
    pods = [pod("old", "127.0.0.1"), worker]
    status = async_.observe(SPEC, signals(rolling, QueueFigures(3, 1), pods), None)
    assert (status.phase, status.reason) == (s.Phase.UPDATING, "BrokerLoginRefused")
    consuming = pod("refused", "127.0.0.2", ready=True)  # restarted with a mended Secret
    consuming["status"]["containerStatuses"] = [refused]
    status = async_.observe(SPEC, signals(WorkloadState(True, 1, 1, 1, True), QueueFigures(0, 0),
                                          [consuming]), None)  # fmt: skip
    assert status.phase is s.Phase.IN_SERVICE


def test_the_oldest_waiting_age_comes_from_the_broker_or_else_from_what_workers_took() -> None:
    two = WorkloadState(True, 2, 2, 2, True)
    pods = [pod("a", "127.0.0.1"), pod("b", "127.0.0.2"), pod("new", "127.0.0.3"),
            pod("silent", "127.0.0.4")]  # fmt: skip
    metrics = {  # the signals' wall clock is 1000.0
        "127.0.0.1": f"{DEQUEUED} 990.5\n",
        "127.0.0.2": f"{DEQUEUED} 996.0\n",  # the newest taken: what waits came after it
        "127.0.0.3": f"{DEQUEUED} 0.0\n",  # has taken nothing yet
    }
    waiting = async_.observe(SPEC, signals(two, QueueFigures(7, 8), pods, metrics), None)
    assert waiting.backlog == QueueFigures(7, 8, 4.0)
    assert "(oldest waiting 4.0 s)" in waiting.message
    assert waiting.to_patch(1, None)["backlog"]["oldestAgeSeconds"] == 4.0
    exact = async_.observe(SPEC, signals(two, QueueFigures(7, 8, 42.25), pods, metrics), None)
    assert exact.backlog == QueueFigures(7, 8, 42.25)  # the broker's own figure wins
    at_zero = async_.observe(SPEC, signals(WorkloadState(True, 0, 0, 0, True),
                                           QueueFigures(3, 0)), None)  # fmt: skip
    assert at_zero.backlog == QueueFigures(3, 0, None)  # no worker took any: unknown
    assert at_zero.to_patch(1, None)["backlog"]["oldestAgeSeconds"] is None
    empty = async_.observe(SPEC, signals(two, QueueFigures(0, 16), pods, metrics), None)
    assert empty.backlog == QueueFigures(0, 16, 0.0)  # nothing waits


@pytest.mark.parametrize(
    ("ready", "taken", "age"),
    [
        (0, [], 0.0),
        (0, [10.0], 0.0),
        (4, [], None),
        (4, [10.0, 70.0, 40.0], 30.0),
        (4, [105.0], 0.0),  # a clock a little ahead of ours: never negative
    ],
)
def test_oldest_age_from_dequeues(ready: int, taken: list[float], age: float | None) -> None:
    assert oldest_age_from_dequeues(ready, taken, now=100.0) == age


def test_the_operator_metrics_carry_the_oldest_age_and_leave_unknown_figures_absent() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    key = ("ns", "abalone")
    busy = Status(s.Phase.IN_SERVICE, replicas=2, ready_replicas=2,
                  backlog=QueueFigures(5, 3, 12.5))  # fmt: skip
    record_queue(metrics, key, busy)
    labels = {"namespace": "ns", "endpoint": "abalone"}
    value = lambda name: registry.get_sample_value(name, labels)  # noqa: E731
    assert value("infermodes_async_approximate_age_of_oldest_request_seconds") == 12.5
    assert value("infermodes_async_approximate_backlog_size") == 8
    assert value("infermodes_async_approximate_backlog_size_per_instance") == 4
    assert value("infermodes_async_has_backlog_without_capacity") == 0
    unknown = Status(s.Phase.IN_SERVICE, backlog=QueueFigures(6, None, None))
    record_queue(metrics, key, unknown)  # in flight and age unknown: not the old figures
    assert value("infermodes_async_approximate_age_of_oldest_request_seconds") is None
    assert value("infermodes_async_approximate_backlog_size") is None
    assert value("infermodes_async_has_backlog_without_capacity") is None


GAUGES = (
    "infermodes_async_approximate_backlog_size",
    "infermodes_async_approximate_backlog_size_per_instance",
    "infermodes_async_has_backlog_without_capacity",
    "infermodes_async_approximate_age_of_oldest_request_seconds",
)


def test_an_unread_queue_publishes_no_figures_and_a_deleted_endpoint_none_at_all() -> None:
    """A figure left as it was would read as current (an alert on backlog without capacity
    would fire on, or never fire): while the broker cannot be read the gauges are absent and
    the failures counter says why; a deleted endpoint leaves no series behind."""
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    key, other = ("ns", "abalone"), ("ns", "other")
    labels = {"namespace": "ns", "endpoint": "abalone"}
    value = lambda name: registry.get_sample_value(name, labels)  # noqa: E731
    waiting = Status(s.Phase.IN_SERVICE, backlog=QueueFigures(5, 0, 3.0))
    record_queue(metrics, key, waiting)
    record_queue(metrics, other, waiting)
    assert value("infermodes_async_has_backlog_without_capacity") == 1
    unread = Status(s.Phase.IN_SERVICE, BROKER_UNREADABLE, backlog_unread=True)
    record_queue(metrics, key, unread)
    failed = Status(s.Phase.FAILED, "CrashLoopBackOff", backlog_unread=True)  # counted too
    record_queue(metrics, key, failed)
    assert [value(name) for name in GAUGES] == [None] * 4
    assert value("infermodes_async_backlog_read_failures_total") == 2  # one per reading
    record_queue(metrics, other, Status(s.Phase.FAILED, "NameInUse"))  # no queue read at all
    assert registry.get_sample_value(GAUGES[0], {"namespace": "ns", "endpoint": "other"}) is None
    assert registry.get_sample_value("infermodes_async_backlog_read_failures_total",
                                      {"namespace": "ns", "endpoint": "other"}) is None  # fmt: skip
    record_queue(metrics, other, waiting)
    other_labels = {"namespace": "ns", "endpoint": "other"}
    assert registry.get_sample_value(GAUGES[0], other_labels) == 5  # the others' stay
    record_queue(metrics, key, waiting)  # read again
    assert value("infermodes_async_approximate_backlog_size") == 5
    metrics.forget(key, deleted=True)
    assert [value(name) for name in GAUGES] == [None] * 4
    assert value("infermodes_async_backlog_read_failures_total") is None
    metrics.forget(("ns", "never-seen"), deleted=True)  # nothing to drop: no error


def test_one_reconcile_reads_the_broker_once_and_its_status_shows_what_the_decision_saw() -> None:
    reads = []

    def read_backlog(endpoint: str, webhooks: bool) -> QueueFigures:
        reads.append(endpoint)
        return QueueFigures(ready=5 * len(reads), in_flight=0)

    pool = {
        "metadata": {"name": "abalone", "generation": 1},
        "spec": {"replicas": 1},
        "status": {"replicas": 1, "readyReplicas": 1, "observedGeneration": 1},
    }
    deps = Deps(
        FakeKube(pool), OperatorSettings(allowed_secret_names=SPEC_SECRETS), lambda ip, port: None
    )
    deps.read_backlog = read_backlog
    status = reconcile(body(FULL_SPEC), ScalerMemory(), deps, autoscale=True).status
    assert reads == ["abalone"]
    assert status.backlog == QueueFigures(ready=5, in_flight=0)
    assert status.desired_replicas == 2  # 5 waiting at 4 per instance


def test_a_broker_url_pika_cannot_read_is_an_unreadable_backlog_without_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scaler keeps the replicas (None), and the log line it leaves quotes nothing of the
    password (pika's own error would quote its first half as the port)."""
    assert read_backlog("ep", "amqp://admin:S3cr/etPw@127.0.0.1:5672/", None) is None
    assert "cannot be read as an AMQP URL" in caplog.text
    assert "S3cr" not in caplog.text and "etPw" not in caplog.text


def test_the_look_at_a_queue_it_cannot_read_says_nothing_above_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """None (no decision asked for), and no warning every second: the reconcile reports an
    unreadable broker; the debug line quotes nothing of the password either."""
    caplog.set_level(logging.DEBUG, logger="infermodes.operator")
    reader = QueueReader("amqp://admin:S3cr/etPw@127.0.0.1:5672/", 1)
    try:
        assert read_ready("ep", reader) is None
    finally:
        reader.close()
    assert read_ready("ep", None) is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "cannot be read as an AMQP URL" in caplog.text
    assert "S3cr" not in caplog.text and "etPw" not in caplog.text


@pytest.mark.parametrize(
    ("holders", "held_by"),
    [
        ([], None),  # alone (or its own entry not listed yet)
        ([("models", "2026-03-01T10:00:00Z")], None),  # itself
        ([("team-b", "2026-03-01T11:00:00Z")], None),  # the other came later
        ([("team-a", "2026-03-01T09:00:00Z")], "team-a"),  # the other came first
        ([("aaa", "2026-03-01T10:00:00Z")], "aaa"),  # the same second: namespace order
        ([("zzz", "2026-03-01T10:00:00Z")], None),
    ],
)
def test_the_oldest_async_endpoint_of_a_name_holds_its_queue(
    holders: list[tuple[str, str]], held_by: str | None
) -> None:
    assert holder_elsewhere("models", "2026-03-01T10:00:00Z", holders) == held_by


def test_an_endpoint_whose_name_another_namespace_holds_runs_no_workers_and_says_why() -> None:
    """Its workers would consume the other endpoint's requests (one queue per name)."""
    pool = {
        "metadata": {"name": "abalone", "generation": 1},
        "spec": {"replicas": 2},
        "status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 1},
    }
    kube = FakeKube(pool)
    deps = Deps(kube, OperatorSettings(allowed_secret_names=SPEC_SECRETS), lambda ip, port: None)
    deps.read_backlog = lambda _endpoint, _hooks: QueueFigures(ready=9, in_flight=0)
    deps.async_holders = lambda namespace, name: [("team-a", "2026-01-01T00:00:00Z")]
    later = body(FULL_SPEC)
    later["metadata"]["creationTimestamp"] = "2026-03-01T10:00:00Z"
    status = reconcile(later, ScalerMemory(), deps, autoscale=True).status
    assert (status.phase, status.reason) == (s.Phase.FAILED, "NameInUse")
    assert "rename one of them" in status.message and "team-a" not in status.message
    assert status.backlog is None  # the queue's figures are the other endpoint's
    [deployment] = kube.applied
    assert deployment["spec"]["replicas"] == 0
    deps.async_holders = lambda namespace, name: None  # cannot be listed: nothing is held back
    status = reconcile(later, ScalerMemory(), deps, autoscale=True).status
    assert status.phase is s.Phase.IN_SERVICE and kube.applied[-1]["spec"]["replicas"] == 3


class ListingKube:
    def __init__(self, objects: list[dict] | Exception) -> None:
        self.objects = objects
        self.lists = 0

    def list_everywhere(self, api_version: str, kind: str) -> list[dict]:
        self.lists += 1
        if isinstance(self.objects, Exception):
            raise self.objects
        return self.objects


def endpoint(namespace: str, name: str, mode: str, created: str) -> dict:
    meta = {"namespace": namespace, "name": name, "creationTimestamp": created}
    return {"metadata": meta, "spec": {"mode": mode}}


def test_async_names_are_listed_once_per_interval_and_only_async_endpoints_count() -> None:
    kube = ListingKube(
        [
            endpoint("a", "x", "async", "T1"),
            endpoint("b", "x", "realtime", "T0"),
            endpoint("c", "x", "async", "T2"),
            endpoint("a", "y", "async", "T3"),
        ]
    )
    clock = [100.0]
    names = AsyncNames(kube, lambda: clock[0], interval=5.0)  # type: ignore[arg-type]
    assert names.holders("a", "x") == [("a", "T1"), ("c", "T2")]
    assert names.holders("a", "y") == [("a", "T3")] and names.holders("c", "x") != []
    assert kube.lists == 1
    clock[0] = 105.0
    names.holders("a", "x")
    assert kube.lists == 2
    kube.objects = KubeError("too many requests")
    clock[0] = 110.0
    assert names.holders("a", "x") == [("a", "T1"), ("c", "T2")]  # the last listing holds
    kube.objects = []
    clock[0] = 115.0
    assert names.holders("a", "x") == []  # none left: an empty listing is a listing
    never = AsyncNames(ListingKube(KubeError("forbidden")), lambda: 0.0)  # type: ignore[arg-type]
    assert never.holders("a", "x") is None
    assert never.batch_outputs("a", "x") is None


def test_an_endpoint_the_last_listing_did_not_hold_is_listed_again_at_once() -> None:
    """Two namesakes (or two batch jobs of one output prefix) applied together: the younger
    one's reconcile read a list made before either existed, within the interval, and started
    beside the older one. A list that holds the endpoint asking was made after it was
    created, so it holds every older one; one that does not is made again."""
    older = endpoint("team-a", "x", "async", "T1")
    kube = ListingKube([endpoint("team-c", "other", "async", "T0")])
    names = AsyncNames(kube, lambda: 100.0, interval=5.0)  # type: ignore[arg-type]
    assert names.holders("team-c", "other") == [("team-c", "T0")] and kube.lists == 1
    kube.objects = [*kube.objects, older, endpoint("team-b", "x", "async", "T2")]
    assert names.holders("team-b", "x") == [("team-a", "T1"), ("team-b", "T2")]
    assert kube.lists == 2  # within the interval: listed again for the one it did not hold
    assert holder_elsewhere("team-b", "T2", names.holders("team-b", "x") or []) == "team-a"
    assert names.holders("team-a", "x") is not None and kube.lists == 2  # both listed now
    older["spec"] = {"mode": "batch", "batch": {"output": {"uri": "s3://d/out/"}}}
    kube.objects.append(endpoint("team-b", "job", "batch", "T3"))
    kube.objects[-1]["spec"]["batch"] = {"output": {"uri": "s3://d/out/"}}
    assert names.batch_outputs("team-b", "job") == [
        BatchOutput("team-a/x", "T1", "s3://d/out/", False),
        BatchOutput("team-b/job", "T3", "s3://d/out/", False),
    ]
    assert kube.lists == 3


def test_the_same_listing_gives_every_batch_job_s_hold_on_its_output_prefix() -> None:
    jobs = [endpoint("a", "x", "batch", "T1"), endpoint("b", "y", "batch", "T2"),
            endpoint("c", "z", "async", "T3")]  # fmt: skip
    for job, phase in zip(jobs, ("InProgress", "Completed"), strict=False):
        job["spec"]["batch"] = {"output": {"uri": f"s3://d/{job['metadata']['name']}/"}}
        job["status"] = {"phase": phase}
    kube = ListingKube(jobs)
    names = AsyncNames(kube, lambda: 0.0)  # type: ignore[arg-type]
    assert names.batch_outputs("a", "x") == [BatchOutput("a/x", "T1", "s3://d/x/", False),
                                      BatchOutput("b/y", "T2", "s3://d/y/", True)]  # fmt: skip
    assert names.holders("c", "z") == [("c", "T3")] and kube.lists == 1  # one listing for both


def test_workers_that_cannot_run_beside_ones_that_serve_do_not_fail_the_endpoint() -> None:
    """A spec whose model cannot load, rolling out beside old workers that consume, and a
    scale-out whose pods cannot start (a deleted Secret) left a serving pool ``Failed``: the
    platform API said so, and Warning Events told of an outage while every request was
    processed. ``Updating`` (as a realtime endpoint's update that cannot roll out) and
    ``InService``, the reason and message saying why; ``Failed`` once none serves."""
    exits = {"restartCount": 2, "state": {"running": {}},
             "lastState": {"terminated": {"exitCode": 3, "message": "no such object"}}}  # fmt: skip
    new = pod("new", "127.0.0.2", ready=False)
    new["status"]["containerStatuses"] = [exits]
    pods = [pod("old", "127.0.0.1"), new]
    rolling = WorkloadState(True, 1, 1, 1, False)
    status = async_.observe(SPEC, signals(rolling, QueueFigures(3, 1), pods), None)
    assert (status.phase, status.reason) == (s.Phase.UPDATING, "ModelLoadFailed")
    assert "1 replica(s) of the previous spec still serve" in status.message, status.message
    assert status.backlog == QueueFigures(3, 1)
    stuck = pod("added", "", phase="Pending", state="waiting", ready=False)
    stuck["status"]["containerStatuses"] = [
        {"state": {"waiting": {"reason": "CreateContainerConfigError",
                               "message": 'secret "rabbit" not found'}}}
    ]  # fmt: skip
    scaled = WorkloadState(True, 2, 1, 2, True)
    status = async_.observe(SPEC, signals(scaled, QueueFigures(9, 1), [pod("old", "127.0.0.1"),
                                                                     stuck]), None)  # fmt: skip
    assert (status.phase, status.reason) == (s.Phase.IN_SERVICE, "ContainerCannotRun")
    assert status.message.endswith("; 1/2 workers serve"), status.message
    alone = WorkloadState(True, 1, 0, 1, False)
    status = async_.observe(SPEC, signals(alone, QueueFigures(3, 0), [new]), None)
    assert (status.phase, status.reason) == (s.Phase.FAILED, "ModelLoadFailed")


def test_a_rollouts_surge_worker_is_not_asked_while_the_backlog_keeps_the_pool() -> None:
    """At its replicas' worth of backlog, a pool rolling out has one pod more (the surge),
    loading its model and not answering: it was asked, made the in-flight count unknown, and
    blanked the backlog and warned for as long as the model took to load."""
    asked: list[tuple[str, ...]] = []

    def fetch(ips: tuple[str, ...], port: int) -> dict[str, str | None]:
        asked.append(ips)
        return dict.fromkeys(ips)

    two = WorkloadState(True, 2, 2, 1, False)
    pods = [pod("a", "127.0.0.1"), pod("b", "127.0.0.2"), pod("surge", "127.0.0.3", ready=False)]
    figures = QueueFigures(5, 2, oldest_age=1.0)  # the broker's age: no worker asked for it
    observed = dataclasses.replace(signals(two, figures, pods), fetch_metrics=fetch)
    status = async_.observe(SPEC, observed, None)  # 7 at 4 each: 2, the replicas
    assert (status.phase, status.reason) == (s.Phase.IN_SERVICE, "Processing")
    assert asked == [] and status.backlog == figures


def test_a_spec_change_rolling_out_over_a_pool_that_served_is_updating() -> None:
    """A healthy rollout (a new model, say) said ``InService``/``Processing`` throughout, while
    a realtime endpoint's and ``infermodes up``'s said ``Updating``: the platform API's
    DescribeEndpoint told a user who ran UpdateEndpoint that nothing was happening."""
    pods = [pod("old", "127.0.0.1"), pod("new", "127.0.0.2", ready=False)]
    rolling = WorkloadState(True, 1, 1, 1, False)
    serving = Status(s.Phase.IN_SERVICE, "Processing", "")
    status = async_.observe(SPEC, signals(rolling, QueueFigures(3, 1), pods), serving)
    assert (status.phase, status.reason) == (s.Phase.UPDATING, "RollingOut"), status
    assert "of the new spec created" in status.message, status.message
    assert status.backlog == QueueFigures(3, 1)
    again = async_.observe(SPEC, signals(rolling, QueueFigures(3, 1), pods), status)
    assert again.phase is s.Phase.UPDATING  # Updating served too: still rolling out
    done = WorkloadState(True, 1, 1, 1, True)
    status = async_.observe(SPEC, signals(done, QueueFigures(3, 1), pods[:1]), again)
    assert (status.phase, status.reason) == (s.Phase.IN_SERVICE, "Processing"), status
    first = async_.observe(SPEC, signals(rolling, QueueFigures(3, 1), pods), None)
    assert first.phase is s.Phase.IN_SERVICE  # a first start accepts work at once, as before


def test_a_broker_secret_the_operator_was_not_told_to_give_fails_the_endpoint() -> None:
    """spec.async.brokerSecretRef names a Secret and a key: any key of any Secret of the
    namespace went into the workers' env."""
    from infermodes.operator.reconcile import reconcile

    kube = FakeKube()
    settings = OperatorSettings(allowed_secret_names=["s3-credentials", "infermodes-*"])
    result = reconcile(body(FULL_SPEC), ScalerMemory(), Deps(kube, settings, lambda ip, p: None))
    assert (result.status.phase, result.status.reason) == (s.Phase.FAILED, "InvalidSpec")
    assert "spec.async.brokerSecretRef.name 'rabbit' is not a Secret" in result.status.message
    assert kube.applied == []
    default = {**FULL_SPEC, "async": {**FULL_SPEC["async"], "brokerSecretRef": {}}}
    ran = reconcile(body(default), ScalerMemory(), Deps(kube, settings, lambda ip, p: None))
    assert ran.status.reason != "InvalidSpec"  # infermodes-rabbitmq, the default, is allowed


HOOKED = {**FULL_SPEC, "async": {**FULL_SPEC["async"], "notification": {
    "topic": True, "successWebhookSecretRef": {"name": "infermodes-hooks", "key": "ok"},
    "errorWebhookSecretRef": {"name": "infermodes-hooks", "key": "err"}}}}  # fmt: skip


def test_webhook_urls_from_secrets_reach_the_workers_env_by_reference_only() -> None:
    """A webhook URL often carries its token, and the spec is readable by whoever may list
    endpoints: kept in a Secret, it reaches the workers as a secretKeyRef, never a value."""
    spec = s.EndpointSpec.model_validate(HOOKED)
    (workers,) = async_.desired_objects(REF, spec, 1, "registry.example/infermodes:1")
    env = {e["name"]: e for e in workers["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name, key in (("SUCCESS", "ok"), ("ERROR", "err")):
        entry = env[f"INFERMODES_WORKER_SECRET_{name}_WEBHOOK_URL"]
        assert entry == {"name": entry["name"], "valueFrom": {"secretKeyRef": {
            "name": "infermodes-hooks", "key": key}}}  # fmt: skip
    assert env["INFERMODES_WORKER_SUCCESS_WEBHOOK_URLS"]["value"] == "[]"
    assert spec.secret_refs()["spec.async.notification.successWebhookSecretRef.name"] == (
        "infermodes-hooks"
    )


def test_a_webhook_secret_the_operator_was_not_told_to_give_fails_the_endpoint() -> None:
    """The workers read the key into their env: the name is checked as every Secret an
    endpoint names is."""
    kube = FakeKube()
    settings = OperatorSettings(allowed_secret_names=[*SPEC_SECRETS, "infermodes-other"])
    result = reconcile(body(HOOKED), ScalerMemory(), Deps(kube, settings, lambda ip, p: None))
    assert (result.status.phase, result.status.reason) == (s.Phase.FAILED, "InvalidSpec")
    said = "spec.async.notification.successWebhookSecretRef.name 'infermodes-hooks' is not"
    assert said in result.status.message, result.status.message
    assert kube.applied == []


def test_a_webhook_and_its_secret_ref_together_are_refused_by_both_validations() -> None:
    both = {"successWebhook": "http://127.0.0.1:9/x",
            "successWebhookSecretRef": {"name": "infermodes-hooks", "key": "ok"}}  # fmt: skip
    with pytest.raises(ValueError, match="successWebhook and successWebhookSecretRef: give one"):
        s.NotificationSpec.model_validate(both)
    rules = [rule for rule, _message in s.NotificationSpec.cel_rules]  # the CRD's, at apply
    assert "!has(self.successWebhook) || !has(self.successWebhookSecretRef)" in rules
    assert "!has(self.errorWebhook) || !has(self.errorWebhookSecretRef)" in rules
    with pytest.raises(ValueError, match="key"):
        s.NotificationSpec.model_validate({"errorWebhookSecretRef": {"name": "infermodes-h"}})


def test_webhook_jobs_in_the_outbox_wake_a_pool_at_zero_and_show_in_its_status() -> None:
    """The outbox's waiting jobs make the decision one worker (not more), and the status
    message says why the pool is not idle; so do jobs whose webhooks were removed from the
    spec since (a worker settles them: kept unread, they would wait for ever)."""
    asked = []

    def read_backlog(endpoint: str, webhooks: bool) -> QueueFigures:
        asked.append(webhooks)
        return QueueFigures(ready=0, in_flight=0, waiting_webhooks=7 if webhooks else 0)

    idle = {
        "metadata": {"name": "abalone", "generation": 1},
        "spec": {"replicas": 0},
        "status": {"replicas": 0, "readyReplicas": 0, "observedGeneration": 1},
    }
    settings = OperatorSettings(allowed_secret_names=SPEC_SECRETS)
    silent = {**FULL_SPEC, "async": {**FULL_SPEC["async"], "notification": {"topic": True}}}
    for spec in (FULL_SPEC, silent):
        deps = Deps(FakeKube(idle), settings, lambda ip, port: None)
        deps.read_backlog = read_backlog
        status = reconcile(body(spec), ScalerMemory(), deps, autoscale=True).status
        assert status.desired_replicas == 1
        assert "7 webhook job(s) waiting" in status.message
    assert asked == [True, True]


class OutboxReader:
    """A QueueReader's reads, by queue name; those ``missing`` were never declared."""

    url = "amqp://127.0.0.1:5672/"

    def __init__(self, ready: dict[str, int], missing: frozenset[str] = frozenset()) -> None:
        self.ready = ready
        self.missing = missing
        self.queues: list[str] = []

    def read(self, queue: str) -> Backlog:
        self.queues.append(queue)
        ready, exists = self.ready.get(queue, 0), queue not in self.missing
        return Backlog(ready=ready, unacked=None, consumers=0, source="amqp", exists=exists)


WITHOUT_WEBHOOKS = s.EndpointSpec.model_validate(
    {**FULL_SPEC, "async": {**FULL_SPEC["async"], "notification": {"topic": True}}}  # type: ignore[dict-item]
)


@pytest.mark.parametrize("spec", [SPEC, WITHOUT_WEBHOOKS], ids=["webhooks", "none"])
def test_the_look_wakes_a_pool_at_zero_for_jobs_in_its_outbox_with_webhooks_or_without(
    spec: s.EndpointSpec,
) -> None:
    """Jobs of webhooks since removed from the spec wait in the outbox too, and only a worker
    settles them: a pool at zero is woken for them, whatever its webhooks now; a running
    pool's outbox is not read (the resync's to read)."""
    at_zero = OutboxReader({outbox_name("ep"): 2})
    assert look_wants_more("ep", async_block(spec), 0, at_zero)  # type: ignore[arg-type]
    assert at_zero.queues == [queue_name("ep"), outbox_name("ep")]
    running = OutboxReader({outbox_name("ep"): 2})
    assert not look_wants_more("ep", async_block(spec), 1, running)  # type: ignore[arg-type]
    assert running.queues == [queue_name("ep")]


def test_the_look_does_not_ask_for_an_outbox_never_declared_and_reads_it_as_empty() -> None:
    """An endpoint no request was ever accepted for: its outbox, declared with its work queue,
    is not asked for (the passive declare of a missing queue costs the reader's channel) and
    holds nothing; one missing beside an existing work queue (a release before outboxes) is
    read as empty, not as a broker that cannot be read."""
    never = OutboxReader({}, missing=frozenset({queue_name("ep"), outbox_name("ep")}))
    assert not look_wants_more("ep", async_block(WITHOUT_WEBHOOKS), 0, never)  # type: ignore[arg-type]
    assert never.queues == [queue_name("ep")]
    older = OutboxReader({}, missing=frozenset({outbox_name("ep")}))
    assert read_ready("ep", older, outbox=True) == (0, 0, 0)  # type: ignore[arg-type]
    assert older.queues == [queue_name("ep"), outbox_name("ep")]
