"""Scaling rules as pure functions: observed load -> desired replicas.

The operator (on Kubernetes) and the local runtime are two actuators of these decisions; both
call them, neither has a copy. Time is a parameter (any monotonic clock), never read here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from infermodes.endpoints.demand import WRITE_INTERVAL_SECONDS, Demand
from infermodes.endpoints.spec import AsyncSpec, RealtimeSpec, ScalingMetric, ServerlessSpec
from infermodes.endpoints.status import BROKER_UNREADABLE, IN_FLIGHT_UNKNOWN
from infermodes.metrics import ServerLoad

TOLERANCE = 0.1  # like the HPA: ignore changes within 10% of the target


@dataclass(frozen=True)
class CounterSample:
    """A monotonic counter read at ``at`` (seconds, any fixed clock)."""

    at: float
    value: float


def rate_per_minute(previous: CounterSample | None, current: CounterSample) -> float | None:
    """Increase per minute between two samples; None without a usable previous sample.
    A counter that went down was reset (the pod restarted): count from zero."""
    if previous is None or current.at <= previous.at:
        return None
    increase = current.value - previous.value
    if increase < 0:
        increase = current.value
    return increase * 60.0 / (current.at - previous.at)


def replicas_for_load(
    total_load: float, target_per_replica: float, current: int, minimum: int, maximum: int
) -> int:
    """Replicas that bring the load per replica to the target, clamped to min..max.

    Within the tolerance band around the target the current count is kept, so noise
    in the measurement does not make the endpoint flap.
    """
    if target_per_replica <= 0:
        raise ValueError("target_per_replica must be positive")
    if current > 0 and total_load > 0:
        ratio = total_load / (current * target_per_replica)
        if abs(ratio - 1.0) <= TOLERANCE:
            return min(max(current, minimum), maximum)
    needed = total_load / target_per_replica if total_load > 0 else 0.0
    # past the maximum is the maximum: over a tiny target (the CRD takes any above zero) the
    # quotient is infinite, which no ceil turns into an int
    wanted = maximum if needed >= maximum else math.ceil(needed - 1e-9)
    return min(max(wanted, minimum), maximum)


def apply_cooldown(
    current: int,
    wanted: int,
    seconds_since_last_change: float,
    scale_out_cooldown: float,
    scale_in_cooldown: float,
) -> int:
    """Hold a change until its cooldown has passed since the last change."""
    if wanted > current and seconds_since_last_change < scale_out_cooldown:
        return current
    if wanted < current and seconds_since_last_change < scale_in_cooldown:
        return current
    return wanted


@dataclass
class ScalerMemory:
    """What the autoscaler remembers about one endpoint between decisions."""

    samples: dict[str, CounterSample] = field(default_factory=dict)  # by replica name
    last_change_at: float = 0.0
    activated_at: float | None = None  # when a scale from zero was decided (wall clock)
    empty_since: float | None = None  # since when a queue's backlog has been empty
    restored: bool = False  # the last change was taken from the status (``restore``)
    # the initialReplicas (realtime or async) the last decision saw (``initial_known``: there
    # was one): a new one starts the endpoint there again, as the platform's UpdateEndpoint
    # starts its new variant at its InitialInstanceCount
    initial_replicas: int | None = None
    initial_known: bool = False
    # wall clock: since when the endpoint is serverless (0.0: as long as this memory knows;
    # None: it is realtime). No gateway reports requests to a realtime endpoint, so one turned
    # serverless counts its idle timeout from the change, not from a request never reported
    serverless_since: float | None = 0.0
    # wall clock: since when a serverless endpoint's template has been loading its model (None:
    # not loading, as far as this memory knows): its loading replica was asked for by no
    # request, so once the model loaded it goes at once unless a request came since
    loading_since: float | None = None
    # the serverless template whose model a replica loaded, as this actuator last said it
    # (``status.loaded_template``): newer than a status it reads back, which may predate its
    # own last write; ``up`` keeps it here alone (a restart of ``up`` loads the model again)
    loaded_template: str | None = None

    def initial_to_start(self, initial: int | None) -> int | None:
        """``initial`` (a block's initialReplicas), when the endpoint must start there again:
        it changed since the last decision this memory saw, as the platform's UpdateEndpoint
        starts the new variant at its InitialInstanceCount; None otherwise (a memory just made,
        an actuator started, takes the endpoint as it is). Remembers it."""
        changed = self.initial_known and self.initial_replicas != initial
        self.initial_replicas, self.initial_known = initial, True
        return initial if changed else None

    def restore(self, last_scale_wall: float | None, now: float, wall: float) -> None:
        """A memory just made (an operator started) takes the last change from the status's
        wall-clock time (``lastScaleTime``), so that a restart does not end a cooldown: only
        the first time, and never later than now."""
        if self.restored:
            return
        self.restored = True
        if last_scale_wall is not None and self.last_change_at == 0.0:
            self.last_change_at = now - max(0.0, wall - last_scale_wall)


def measured_load(
    metric: ScalingMetric, loads: Mapping[str, ServerLoad], memory: ScalerMemory, now: float
) -> float | None:
    """Total load over the replicas that could be read, in the unit of the scaling target;
    None until measurable (an invocation rate needs two samples of every replica)."""
    if not loads:
        return None
    if metric is ScalingMetric.IN_FLIGHT_REQUESTS:
        return sum(load.in_flight for load in loads.values())
    total = 0.0
    complete = True
    samples = {}
    for name, load in loads.items():
        sample = CounterSample(now, load.invocations_total)
        rate = rate_per_minute(memory.samples.get(name), sample)
        samples[name] = sample
        if rate is None:
            complete = False
        else:
            total += rate
    memory.samples = samples
    return total if complete else None


def realtime_replicas(
    block: RealtimeSpec,
    current: int | None,
    loads: Callable[[], Mapping[str, ServerLoad]],
    memory: ScalerMemory,
    now: float,
    autoscale: bool,
) -> int:
    """Replicas of a realtime endpoint. ``current`` is None before its workload exists;
    ``loads`` reads each ready replica's load, and is only called when autoscaling.

    A new endpoint starts at ``initialReplicas`` (``minReplicas`` without it), and so does one
    whose ``initialReplicas`` changed since the last decision this memory saw: a change of
    replicas, whose cooldown counts (as the start's does). A memory just made (an actuator
    started) takes the endpoint's replicas as they are."""
    low, high = block.min_replicas, block.max_replicas
    memory.serverless_since = None
    restart = memory.initial_to_start(block.initial_replicas)
    if current is None:  # the endpoint's start is a change: no scale-in within its cooldown
        memory.last_change_at = now
        return block.first_replicas()
    if restart is not None:
        if restart != current:
            memory.last_change_at = now
        return restart
    bounded = min(max(current, low), high)
    if bounded != current:  # new bounds moved the replicas: a change, whose cooldown counts
        memory.last_change_at = now
    current = bounded
    if not autoscale:
        return current
    load = measured_load(block.scaling.metric, loads(), memory, now)
    if load is None:
        return current
    wanted = replicas_for_load(load, block.scaling.target, current, low, high)
    decided = apply_cooldown(
        current,
        wanted,
        now - memory.last_change_at,
        block.scaling.scale_out_cooldown_seconds,
        block.scaling.scale_in_cooldown_seconds,
    )
    if decided != current:
        memory.last_change_at = now
    return decided


SERVERLESS_SCALE_IN_DELAY_SECONDS = 30.0  # replicas above demand stay this long after a change
# a gateway reports a request within its write interval (and the write's own way): idle is
# judged this much later, so a request just before the timeout is seen before the last
# replica goes (it was scaled to zero under the next request, a cold start for nothing)
IDLE_REPORT_GRACE_SECONDS = 2 * WRITE_INTERVAL_SECONDS


def serverless_bounds(block: ServerlessSpec) -> tuple[int, int]:
    """(replicas kept warm, replicas at most): provisioned concurrency and maxConcurrency in
    replicas of ``concurrencyPerReplica`` each."""
    per_replica = block.concurrency_per_replica
    warm = math.ceil(block.provisioned_concurrency / per_replica)
    return warm, max(1, math.ceil(block.max_concurrency / per_replica))


def serverless_replicas(
    block: ServerlessSpec,
    current: int,
    demand: Demand,
    memory: ScalerMemory,
    now: float,
    wall: float,
    load_failed: bool = False,
    loaded: bool = True,
) -> int:
    """Replicas of a serverless endpoint from the gateways' demand (``wall``: the wall clock,
    like the demand's timestamps; ``now``: the monotonic clock of every mode's cooldowns, which
    share one memory across a change between realtime and serverless), always within the warm
    floor and the maximum:

    - demand (in flight or held) -> ceil(demand / concurrencyPerReplica), at least one; more
      replicas than now at once (a held request is a cold start waiting for this decision);
    - no demand, but a request within ``idleTimeoutSeconds`` -> one replica stays;
    - no demand and no request for ``idleTimeoutSeconds`` (and ``IDLE_REPORT_GRACE_SECONDS``),
      nor a change from realtime (``ScalerMemory.serverless_since``) -> the warm floor at once
      (zero unless provisioned concurrency keeps some);
    - any other decrease waits ``SERVERLESS_SCALE_IN_DELAY_SECONDS`` after the last change, so
      the tail of a burst does not flap;
    - its model could not be loaded (``load_failed``) -> at least one replica, whatever the
      demand: the endpoint is Failed, so the gateways refuse its requests and no demand comes
      to start one; that replica tries the model again (under the kubelet's back-off, or
      ``infermodes up``'s), so a mended artifact brings the endpoint back, and it does not sit
      at zero looking InService with a model that cannot load;
    - its template (``plan.replica_template``) has not had a replica ready yet (not
      ``loaded``) -> at least one replica, which loads the model before the endpoint takes
      requests, as the platform's CreateEndpoint and UpdateEndpoint do; once it was ready, the
      warm floor at once unless a request came since the load began (none asked for it).
    """
    warm, most = serverless_bounds(block)
    # a serverless endpoint has no initialReplicas: one made realtime with one starts there
    memory.initial_to_start(None)
    if memory.serverless_since is None:  # realtime until now
        memory.serverless_since = wall
    loading_since, memory.loading_since = memory.loading_since, None
    if not loaded:
        memory.loading_since = wall if loading_since is None else loading_since
    unasked = loaded and loading_since is not None and demand.last_request_at < loading_since
    quiet_for = wall - max(demand.last_request_at, memory.serverless_since)
    idle = demand.active == 0 and (
        unasked or quiet_for >= block.idle_timeout_seconds + IDLE_REPORT_GRACE_SECONDS
    )
    if demand.active > 0:
        wanted = math.ceil(demand.active / block.concurrency_per_replica)
    else:
        wanted = 0 if idle else min(current, 1)
    at_least_one = demand.active or load_failed or not loaded
    wanted = min(max(wanted, warm, 1 if at_least_one else 0), most)
    held_back = not idle and now - memory.last_change_at < SERVERLESS_SCALE_IN_DELAY_SECONDS
    if wanted < current and held_back:
        return current
    if wanted != current:
        memory.last_change_at = now
    return wanted


def backlog_wants(block: AsyncSpec, backlog: int, waiting_webhooks: int = 0) -> int:
    """Workers for ``backlog`` queued and in-flight requests: ceil(backlog /
    targetBacklogPerInstance) within minReplicas..maxReplicas; at least one while
    ``waiting_webhooks`` (jobs ready in the endpoint's outbox) wait, as only a worker sends
    them, but no more for them (one worker's senders drain an outbox)."""
    wanted = math.ceil(backlog / block.target_backlog_per_instance)
    if waiting_webhooks > 0:
        wanted = max(wanted, 1)
    return min(max(wanted, block.min_replicas), block.max_replicas)


def scale_out_due(
    block: AsyncSpec, current: int, ready: int, consumers: int, waiting_webhooks: int = 0
) -> bool:
    """Whether the queue as one AMQP passive declare shows it asks for more workers than the
    pool has: the operator's look between resyncs (a pool at zero with anything waiting, a
    burst that outgrew the pool), which then decides in full (``backlog_replicas``).

    In-flight work is not in the declare, but while requests wait the broker has filled every
    consumer's prefetch (one consumer per worker, prefetch = maxConcurrentInvocationsPerInstance),
    so at least ``consumers x prefetch`` are in flight: a bound the full decision's count meets
    or passes, so it scales out whenever this says so. ``waiting_webhooks`` (the outbox's
    ready jobs) wake a pool at zero as a queued request does."""
    held = held_at_least(block, ready, consumers)
    return backlog_wants(block, ready + held, waiting_webhooks) > current


def held_at_least(block: AsyncSpec, ready: int, consumers: int | None) -> int:
    """In flight at least, whatever else is known: while requests wait, the broker has filled
    every consumer's prefetch. (A worker that lost its connection mid-work may show several
    consumers until its next one, their prefetches adding up to one worker's: counted more
    than once, it may make a pool scale out further than its backlog needs.)"""
    return (consumers or 0) * block.max_concurrent_invocations_per_instance if ready else 0


@dataclass(frozen=True)
class PoolInFlight:
    """What a queue-fed pool holds, as the backlog decision reads it (None: unknown), and the
    running workers that could not say."""

    count: int | None
    silent: tuple[str, ...] = ()


def pool_in_flight(
    block: AsyncSpec,
    ready: int | None,
    unacked: int | None,
    pool: int,
    workers: Callable[[], Mapping[str, float | None]],
) -> PoolInFlight:
    """The broker's unacknowledged count, checked against the workers' own counts whenever it
    could let the pool shrink: RabbitMQ's management API samples the queue and may say 0
    while the workers hold deliveries, and without it the broker does not say at all. The
    larger of the two counts stands; one silent worker makes it unknown (no scale-in).

    ``pool``: the workers the pool has (the larger of its replicas and its running workers);
    ``workers`` reads each running worker's in-flight count (None: it cannot say), and is
    called only when needed: the rule is pure, the reading is the actuator's."""
    if ready is None:
        return PoolInFlight(unacked)
    if unacked is not None and backlog_wants(block, ready + unacked) >= pool:
        return PoolInFlight(unacked)  # the pool cannot shrink on the broker's figures
    readings = workers()
    silent = tuple(sorted(name for name, count in readings.items() if count is None))
    if silent:
        return PoolInFlight(None, silent)
    held = int(sum(count for count in readings.values() if count is not None))
    return PoolInFlight(max(unacked or 0, held))


# pod-deletion-cost's largest value (an int32): what removing a worker that cannot say costs
UNKNOWN_HOLD_COST = 2**31 - 1


def removal_cost(held: float | None) -> int:
    """What removing a worker in a scale-in costs: the requests and webhook jobs it holds
    (``held``); one that cannot say (None) may hold a full prefetch, so it costs more than any
    that can, whatever count a worker reports (the annotation takes no more than an int32).
    The operator makes it each worker pod's deletion cost; ``workers_to_remove`` ranks
    ``up``'s workers by it."""
    return UNKNOWN_HOLD_COST if held is None else min(int(held), UNKNOWN_HOLD_COST - 1)


def workers_to_remove(
    held: Mapping[str, float | None], ready: Collection[str], wanted: int
) -> list[str]:
    """The workers a pool shrinking to ``wanted`` removes (none if it does not shrink), from
    what each holds (None: it cannot say), given oldest first, and which are ``ready``: as a
    ReplicaSet ranks its pods, the unready first whatever they hold, then the cheapest to
    remove (``removal_cost``: idle ones, then those holding fewer, last those that cannot
    say), and of equal rank the newest first. A removed worker finishes what it holds, but
    holds its grace and its capacity meanwhile.

    Removing an unready worker first loses nothing: a removed worker finishes what it holds
    within its grace; what a worker that lost its broker was delivered and did not settle is
    the broker's again once its connection is gone (``queueing.rabbitmq`` redelivers it; the
    embedded queue's leases lapse once not renewed), and of two copies of a request the first
    to claim its result decides it (``workers.async_worker``), so its output stays one."""
    ranked = sorted(
        enumerate(held.items()),
        key=lambda item: (item[1][0] in ready, removal_cost(item[1][1]), -item[0]),
    )
    return [key for _, (key, _) in ranked[: max(0, len(held) - wanted)]]


INITIAL_REPLICAS = "InitialReplicas"  # the pool (re)started at its initialReplicas


@dataclass(frozen=True)
class BacklogDecision:
    """Replicas for a queue-fed pool, and why (for the status)."""

    replicas: int
    reason: str


def backlog_replicas(
    block: AsyncSpec,
    current: int | None,
    ready: int | None,
    unacked: int | None,
    memory: ScalerMemory,
    now: float,
    consumers: int | None = None,
    waiting_webhooks: int = 0,
) -> BacklogDecision:
    """KEDA's semantics for a queue-fed worker pool, without its known flaw: in-flight work
    counts, so a busy pool is never mistaken for an idle one. ``current`` is None before the
    pool's workload exists.

    - backlog = ready + unacknowledged; replicas = ceil(backlog / targetBacklogPerInstance)
      within minReplicas..maxReplicas (minReplicas may be 0);
    - a new pool starts at ``initialReplicas`` (``minReplicas`` without it), as the platform
      starts an async variant at its InitialInstanceCount; so does one whose ``initialReplicas``
      changed since the last decision this memory saw, but not below what its backlog asks
      for, nor below the current replicas while in flight is unknown (``INITIAL_REPLICAS``);
      a memory just made (an actuator started) takes the pool as it is;
    - from zero as soon as anything is queued (the platform's HasBacklogWithoutCapacity);
    - more replicas at once, fewer only ``scaleInCooldownSeconds`` after the last change, and
      zero only once the backlog has been empty that long;
    - the broker unreadable (``ready`` None) -> the current replicas, never a blind zero;
      in-flight unknown (``unacked`` None) -> scale out on what is ready plus what the
      ``consumers`` hold at least (``held_at_least``, the bound the look counts too), never in;
    - a changed minReplicas..maxReplicas applies at once, whatever the broker says (a removed
      worker finishes what it holds before it exits);
    - webhook jobs waiting in the endpoint's outbox (``waiting_webhooks``) keep one worker,
      or wake one, as only workers settle them (send, or ack those of removed webhooks): the
      backlog is not empty while they wait, so zero comes ``scaleInCooldownSeconds`` after
      the last was taken; they never ask for more than one worker;
    - any change of replicas, whatever its reason (the start too), starts the scale-in cooldown.
    """
    restart = memory.initial_to_start(block.initial_replicas)
    if current is None:
        memory.last_change_at = now
        return BacklogDecision(block.first_replicas(), INITIAL_REPLICAS)
    within = min(max(current, block.min_replicas), block.max_replicas)
    needed: int | None = None  # replicas the backlog asks for, when in flight is known
    if ready is None:
        decision = BacklogDecision(within, BROKER_UNREADABLE)
    elif unacked is None:
        memory.empty_since = None  # unknown is not empty: zero waits for empty readings
        held = held_at_least(block, ready, consumers)
        wanted = backlog_wants(block, ready + held, waiting_webhooks)
        decision = BacklogDecision(max(within, wanted), IN_FLIGHT_UNKNOWN)
    else:
        needed = backlog_wants(block, ready + unacked, waiting_webhooks)
        total = ready + unacked
        decision = _known_backlog(block, current, within, total, waiting_webhooks, memory, now)
    if restart is not None:
        floor = decision.replicas if needed is None else needed
        decision = BacklogDecision(max(restart, floor), INITIAL_REPLICAS)
    if decision.replicas != current:
        memory.last_change_at = now
    return decision


def _known_backlog(
    block: AsyncSpec,
    current: int,
    within: int,
    total: int,
    waiting_webhooks: int,
    memory: ScalerMemory,
    now: float,
) -> BacklogDecision:
    """The decision on a backlog read whole (ready and in flight)."""
    if total > 0 or waiting_webhooks > 0:
        memory.empty_since = None
    elif memory.empty_since is None:
        memory.empty_since = now
    wanted = backlog_wants(block, total, waiting_webhooks)
    if wanted > current:
        return BacklogDecision(wanted, "Activated" if current == 0 else "ScaledOut")
    if wanted < current:
        cooled = now - memory.last_change_at >= block.scale_in_cooldown_seconds
        empty_long = (
            memory.empty_since is not None
            and now - memory.empty_since >= block.scale_in_cooldown_seconds
        )
        if not cooled or (wanted == 0 and not empty_long):
            if within < current:  # maxReplicas was lowered
                return BacklogDecision(within, "ScaledIn")
            return BacklogDecision(current, "CoolingDown")
        return BacklogDecision(wanted, "ScaledIn")
    return BacklogDecision(current, "Steady")
