"""The queue-fed pool's replica decision at its edges: in-flight work counts, activation from
zero, cooldowns, clamps, and an unreadable broker."""

import pytest

from infermodes.endpoints.scaling import (
    PoolInFlight,
    ScalerMemory,
    backlog_replicas,
    pool_in_flight,
    removal_cost,
    scale_out_due,
    workers_to_remove,
)
from infermodes.endpoints.spec import AsyncSpec

NOW = 10_000.0


def block(**fields: object) -> AsyncSpec:
    return AsyncSpec.model_validate({"outputPath": "s3://b/out", **fields})


def decide(spec: AsyncSpec, current: int | None, ready: int | None, unacked: int | None,
           memory: ScalerMemory, now: float = NOW,
           consumers: int | None = None) -> tuple[int, str]:  # fmt: skip
    decision = backlog_replicas(spec, current, ready, unacked, memory, now, consumers)
    return decision.replicas, decision.reason


def test_in_flight_work_keeps_a_busy_pool_even_with_an_empty_queue() -> None:
    memory = ScalerMemory()
    spec = block(scaleInCooldownSeconds=0, targetBacklogPerInstance=1)
    assert decide(spec, 3, 0, 3, memory) == (3, "Steady")


def test_activation_from_zero_on_the_first_message() -> None:
    memory = ScalerMemory(last_change_at=NOW)
    assert decide(block(), 0, 1, 0, memory) == (1, "Activated")


def test_replicas_follow_backlog_within_the_clamps() -> None:
    spec = block(targetBacklogPerInstance=5, minReplicas=1, maxReplicas=4)
    assert decide(spec, 1, 12, 0, ScalerMemory()) == (3, "ScaledOut")
    assert decide(spec, 1, 500, 0, ScalerMemory()) == (4, "ScaledOut")


def test_scale_in_waits_for_the_cooldown() -> None:
    spec = block(scaleInCooldownSeconds=60, targetBacklogPerInstance=5)
    memory = ScalerMemory(last_change_at=NOW)
    assert decide(spec, 3, 5, 0, memory, NOW + 59) == (3, "CoolingDown")
    assert decide(spec, 3, 5, 0, memory, NOW + 60) == (1, "ScaledIn")


def test_zero_only_after_the_backlog_was_empty_for_the_cooldown() -> None:
    spec = block(scaleInCooldownSeconds=60)
    memory = ScalerMemory(last_change_at=NOW - 1000)
    assert decide(spec, 1, 0, 1, memory, NOW) == (1, "Steady")  # one still in flight
    assert decide(spec, 1, 0, 0, memory, NOW + 1) == (1, "CoolingDown")  # empty since NOW + 1
    assert decide(spec, 1, 0, 0, memory, NOW + 60) == (1, "CoolingDown")
    assert decide(spec, 1, 0, 0, memory, NOW + 61) == (0, "ScaledIn")


def test_a_message_resets_the_empty_clock() -> None:
    spec = block(scaleInCooldownSeconds=60)
    memory = ScalerMemory(last_change_at=NOW - 1000)
    decide(spec, 1, 0, 0, memory, NOW)
    decide(spec, 1, 1, 0, memory, NOW + 30)
    assert decide(spec, 1, 0, 0, memory, NOW + 61) == (1, "CoolingDown")


def test_unknown_in_flight_resets_the_empty_clock() -> None:
    """Work may have been held while nobody could say: zero waits for a full empty cooldown."""
    spec = block(scaleInCooldownSeconds=60)
    memory = ScalerMemory(last_change_at=NOW - 1000)
    decide(spec, 1, 0, 0, memory, NOW)
    assert decide(spec, 1, 0, None, memory, NOW + 30) == (1, "InFlightUnknown")
    assert decide(spec, 1, 0, 0, memory, NOW + 61) == (1, "CoolingDown")
    assert decide(spec, 1, 0, 0, memory, NOW + 120) == (1, "CoolingDown")  # empty since +61
    assert decide(spec, 1, 0, 0, memory, NOW + 121) == (0, "ScaledIn")


@pytest.mark.parametrize("current", [0, 2])
def test_an_unreadable_broker_keeps_the_replicas(current: int) -> None:
    assert decide(block(), current, None, None, ScalerMemory()) == (current, "BrokerUnreadable")


def test_unknown_in_flight_scales_out_on_ready_but_never_in() -> None:
    spec = block(targetBacklogPerInstance=2, scaleInCooldownSeconds=0)
    assert decide(spec, 1, 6, None, ScalerMemory()) == (3, "InFlightUnknown")
    assert decide(spec, 3, 0, None, ScalerMemory()) == (3, "InFlightUnknown")


def test_a_scale_out_while_in_flight_is_unknown_starts_the_cooldown() -> None:
    """It changed the replicas as any scale-out does: the next known reading may not scale
    in before the cooldown (it did at once), nor may one after a clamp the unread broker
    applied."""
    spec = block(targetBacklogPerInstance=1, scaleInCooldownSeconds=300, maxReplicas=10)
    memory = ScalerMemory(last_change_at=NOW - 1000)
    assert decide(spec, 1, 7, None, memory, NOW) == (7, "InFlightUnknown")
    assert decide(spec, 7, 1, 0, memory, NOW + 10) == (7, "CoolingDown")
    assert decide(spec, 7, 1, 0, memory, NOW + 300) == (1, "ScaledIn")
    clamped = block(minReplicas=2, scaleInCooldownSeconds=300)
    memory = ScalerMemory(last_change_at=NOW - 1000)
    assert decide(clamped, 1, None, None, memory, NOW) == (2, "BrokerUnreadable")
    assert memory.last_change_at == NOW


def test_unknown_in_flight_counts_the_prefetch_of_every_consumer_while_requests_wait() -> None:
    """The broker has filled each consumer's prefetch (4 here) while anything waits: in flight
    at least, the bound the look counts, so the look does not ask each second in vain."""
    spec = block(targetBacklogPerInstance=5)
    assert decide(spec, 1, 2, None, ScalerMemory(), consumers=1) == (2, "InFlightUnknown")
    assert decide(spec, 1, 2, None, ScalerMemory(), consumers=0) == (1, "InFlightUnknown")
    assert decide(spec, 1, 0, None, ScalerMemory(), consumers=1) == (1, "InFlightUnknown")


def test_changed_bounds_apply_at_once_whatever_the_broker_says() -> None:
    """A lowered maxReplicas (or a raised minReplicas) is the user's word: it neither waits for
    a cooldown nor for a readable broker."""
    lowered = block(maxReplicas=2, scaleInCooldownSeconds=600)
    assert decide(lowered, 4, None, None, ScalerMemory()) == (2, "BrokerUnreadable")
    assert decide(lowered, 4, 0, None, ScalerMemory()) == (2, "InFlightUnknown")
    busy = ScalerMemory(last_change_at=NOW)
    assert decide(lowered, 4, 100, 8, busy) == (2, "ScaledIn")
    assert decide(lowered, 4, 0, 1, ScalerMemory(last_change_at=NOW)) == (2, "ScaledIn")
    raised = block(minReplicas=2)
    assert decide(raised, 0, None, None, ScalerMemory()) == (2, "BrokerUnreadable")


def held(spec: AsyncSpec, ready: int | None, unacked: int | None, pool: int,
         workers: dict[str, float | None]) -> tuple[PoolInFlight, bool]:  # fmt: skip
    """The in-flight figure, and whether the workers were asked."""
    asked = []

    def read() -> dict[str, float | None]:
        asked.append(True)
        return workers

    return pool_in_flight(spec, ready, unacked, pool, read), bool(asked)


def test_the_workers_are_asked_only_when_the_broker_would_let_the_pool_shrink() -> None:
    spec = block(targetBacklogPerInstance=4, minReplicas=1, maxReplicas=5)
    busy = {"a": 2.0, "b": 3.0}
    assert held(spec, 5, 3, 2, busy) == (PoolInFlight(3), False)  # 8 at 4 each: 2 stay
    assert held(spec, 0, 0, 1, busy) == (PoolInFlight(0), False)  # at minReplicas
    assert held(spec, None, None, 2, busy) == (PoolInFlight(None), False)  # broker unreadable
    assert held(spec, 0, 1, 2, busy) == (PoolInFlight(5), True)  # a stale sample: theirs
    assert held(spec, 0, 4, 2, {"a": 0.0, "b": 1.0}) == (PoolInFlight(4), True)  # the larger
    assert held(spec, 0, None, 2, busy) == (PoolInFlight(5), True)  # no management API
    assert held(spec, 0, None, 0, {}) == (PoolInFlight(0), True)  # no worker runs: none held
    # four replicas, one running (three starting): the pool can shrink, so the one is asked
    assert held(spec, 0, 1, 4, {"a": 4.0}) == (PoolInFlight(4), True)


def test_one_silent_worker_makes_the_in_flight_figure_unknown() -> None:
    spec = block(minReplicas=0)
    found, asked = held(spec, 0, 0, 3, {"a": 0.0, "b": None, "c": None})
    assert asked and found == PoolInFlight(None, ("b", "c"))
    assert decide(spec, 3, 0, found.count, ScalerMemory()) == (3, "InFlightUnknown")


def test_the_look_between_resyncs_asks_for_a_decision_when_what_waits_outgrew_the_pool() -> None:
    spec = block(targetBacklogPerInstance=5, minReplicas=0, maxReplicas=4)
    assert scale_out_due(spec, 0, 1, 0)  # a pool at zero with anything waiting
    assert not scale_out_due(spec, 0, 0, 0)
    assert not scale_out_due(spec, 1, 5, 0)  # five for one worker: its target
    assert scale_out_due(spec, 1, 6, 0)
    assert scale_out_due(spec, 2, 11, 0)
    assert not scale_out_due(spec, 4, 500, 4)  # at maxReplicas
    assert not scale_out_due(spec, 3, 0, 3)  # fewer is the resync's, behind its cooldown
    # while requests wait, every consumer's prefetch (4 by default) is full: in flight too
    assert scale_out_due(spec, 1, 2, 1)  # 2 waiting + 4 held by the one worker: 6 for one
    assert not scale_out_due(spec, 1, 0, 1)  # none waiting: in flight unknown, none counted
    assert not scale_out_due(spec, 2, 2, 2)  # 2 + 8 = 10: two workers' target


def test_the_decision_the_look_asks_for_scales_out() -> None:
    """Whenever the look asks, the full decision scales out: it never asks for nothing. The
    decision counts what the broker (or the workers) say is in flight, which while requests
    wait is at least every consumer's prefetch; with that count unknown, it counts the same
    bound as the look."""
    spec = block(targetBacklogPerInstance=3, minReplicas=1, maxReplicas=6)
    prefetch = spec.max_concurrent_invocations_per_instance
    for current in range(0, 7):
        for consumers in range(0, current + 1):
            for ready in range(0, 25):
                if not scale_out_due(spec, current, ready, consumers):
                    continue
                held = consumers * prefetch if ready else 0
                for extra in (0, 1, 4, 12):
                    replicas, _ = decide(spec, current, ready, held + extra, ScalerMemory())
                    assert replicas > current, (current, consumers, ready, extra)
                unknown = decide(spec, current, ready, None, ScalerMemory(), NOW, consumers)
                assert unknown[0] > current, (current, consumers, ready)


def test_a_new_pool_starts_at_its_initial_replicas_and_holds_them_through_the_cooldown() -> None:
    """The platform starts an async variant at its InitialInstanceCount (3 here, within 0..5):
    the pool started at minReplicas (0). The start is a change: an empty backlog takes the pool
    to zero only after the cooldown, with the backlog empty that long."""
    spec = block(minReplicas=0, maxReplicas=5, initialReplicas=3, scaleInCooldownSeconds=60)
    memory = ScalerMemory()
    assert decide(spec, None, None, None, memory) == (3, "InitialReplicas")
    assert decide(spec, 3, 0, 0, memory, NOW + 59) == (3, "CoolingDown")
    assert decide(spec, 3, 0, 0, memory, NOW + 60) == (3, "CoolingDown")  # empty since +59
    assert decide(spec, 3, 0, 0, memory, NOW + 119) == (0, "ScaledIn")
    assert decide(block(minReplicas=1), None, 50, 0, ScalerMemory()) == (1, "InitialReplicas")


def test_a_backlog_above_the_start_scales_out_from_it_at_once() -> None:
    spec = block(maxReplicas=5, initialReplicas=2, targetBacklogPerInstance=1)
    memory = ScalerMemory()
    assert decide(spec, None, None, None, memory) == (2, "InitialReplicas")
    assert decide(spec, 2, 4, 0, memory, NOW + 1) == (4, "ScaledOut")


def test_a_changed_initial_replicas_starts_the_pool_there_again_but_not_below_its_work() -> None:
    """As the platform's UpdateEndpoint starts the new variant at its InitialInstanceCount:
    higher at once whatever the broker says; lower at once too, but never below what the known
    backlog asks for, nor below the replicas while in flight is unknown."""
    first = block(maxReplicas=8, initialReplicas=5, targetBacklogPerInstance=1)

    def changed_to(initial: int, current: int, ready: int | None,
                   unacked: int | None) -> tuple[int, str]:  # fmt: skip
        memory = ScalerMemory(last_change_at=NOW)
        decide(first, current, 0, current, memory, NOW)
        return decide(first.model_copy(update={"initial_replicas": initial}), current, ready,
                      unacked, memory, NOW + 1)  # fmt: skip

    assert changed_to(7, 5, None, None) == (7, "InitialReplicas")
    assert changed_to(2, 5, 0, 1) == (2, "InitialReplicas")
    assert changed_to(2, 5, 1, 3) == (4, "InitialReplicas")  # four requests: four workers
    assert changed_to(2, 5, 0, None) == (5, "InitialReplicas")  # in flight unknown: never in
    assert changed_to(2, 5, None, None) == (5, "InitialReplicas")


def test_the_same_initial_replicas_or_a_memory_just_made_keeps_the_pool_as_it_is() -> None:
    spec = block(initialReplicas=3, scaleInCooldownSeconds=60, targetBacklogPerInstance=1)
    memory = ScalerMemory(last_change_at=NOW)
    assert decide(spec, 1, 1, 0, memory) == (1, "Steady")  # an actuator just started
    assert decide(spec, 1, 1, 0, memory, NOW + 1) == (1, "Steady")  # the same value again


def test_initial_replicas_lies_within_the_range() -> None:
    with pytest.raises(ValueError, match="initialReplicas must lie within"):
        block(minReplicas=1, maxReplicas=3, initialReplicas=4)
    assert block(initialReplicas=0).first_replicas() == 0


def with_webhooks(spec: AsyncSpec, current: int | None, ready: int | None, unacked: int | None,
                  webhooks: int, memory: ScalerMemory, now: float = NOW,
                  consumers: int | None = None) -> tuple[int, str]:  # fmt: skip
    decision = backlog_replicas(spec, current, ready, unacked, memory, now, consumers, webhooks)
    return decision.replicas, decision.reason


def test_webhook_jobs_waiting_in_the_outbox_wake_a_pool_at_zero() -> None:
    """Only a worker sends an outbox's jobs: a pool at zero with jobs there and no request
    would strand them until the next request."""
    spec = block(minReplicas=0, scaleInCooldownSeconds=60)
    memory = ScalerMemory(last_change_at=NOW)
    assert with_webhooks(spec, 0, 0, 0, 1, memory) == (1, "Activated")
    assert with_webhooks(spec, 0, 0, 0, 0, ScalerMemory(last_change_at=NOW)) == (0, "Steady")
    assert scale_out_due(spec, 0, 0, 0, 1)  # the look wakes it too
    assert not scale_out_due(spec, 0, 0, 0, 0)
    assert not scale_out_due(spec, 1, 0, 1, 7)  # one worker sends them all


def test_webhook_jobs_keep_the_last_worker_and_zero_waits_the_cooldown_after_them() -> None:
    spec = block(minReplicas=0, scaleInCooldownSeconds=60)
    memory = ScalerMemory(last_change_at=NOW - 1000)
    assert with_webhooks(spec, 1, 0, 0, 3, memory, NOW) == (1, "Steady")
    assert with_webhooks(spec, 1, 0, 0, 1, memory, NOW + 100) == (1, "Steady")
    # the last one taken (its POST in flight is no ready job): empty from now on
    assert with_webhooks(spec, 1, 0, 0, 0, memory, NOW + 101) == (1, "CoolingDown")
    assert with_webhooks(spec, 1, 0, 0, 0, memory, NOW + 160) == (1, "CoolingDown")
    assert with_webhooks(spec, 1, 0, 0, 0, memory, NOW + 161) == (0, "ScaledIn")


def test_webhook_jobs_never_ask_for_more_than_one_worker() -> None:
    spec = block(minReplicas=0, maxReplicas=4, targetBacklogPerInstance=1,
                 scaleInCooldownSeconds=0)  # fmt: skip
    memory = ScalerMemory(last_change_at=NOW - 1000)
    assert with_webhooks(spec, 0, 0, 0, 500, memory) == (1, "Activated")
    assert with_webhooks(spec, 3, 0, 0, 500, ScalerMemory(last_change_at=NOW - 1000)) == (
        1,
        "ScaledIn",
    )
    # requests decide above one, as without webhooks
    assert with_webhooks(spec, 1, 3, 0, 500, ScalerMemory()) == (3, "ScaledOut")


def test_webhook_jobs_keep_a_worker_while_in_flight_is_unknown_and_through_a_restart() -> None:
    spec = block(minReplicas=0, initialReplicas=0)
    assert with_webhooks(spec, 0, 0, None, 2, ScalerMemory()) == (1, "InFlightUnknown")
    memory = ScalerMemory()
    memory.initial_to_start(2)  # the last decision saw initialReplicas 2: now 0
    assert with_webhooks(spec, 1, 0, 0, 2, memory) == (1, "InitialReplicas")
    # an unreadable broker keeps the replicas, as without webhooks
    assert with_webhooks(spec, 0, None, None, 0, ScalerMemory()) == (0, "BrokerUnreadable")


@pytest.mark.parametrize(
    ("held", "wanted", "removed"),
    [
        # the older idle, the newer busy: the idle one goes, not the newest
        ({"w0": 0.0, "w1": 1.0}, 1, ["w0"]),
        # fewer held first, whatever the age
        ({"w0": 3.0, "w1": 1.0, "w2": 2.0}, 1, ["w1", "w2"]),
        # one that cannot say counts as busier than any that can (it may hold a full prefetch)
        ({"w0": None, "w1": 4.0, "w2": 0.0}, 1, ["w2", "w1"]),
        ({"w0": None, "w1": None}, 1, ["w1"]),  # both unknown: the newer
        # all busy alike: the newest first, as before and as a ReplicaSet
        ({"w0": 2.0, "w1": 2.0, "w2": 2.0}, 1, ["w2", "w1"]),
        ({"w0": 0.0, "w1": 0.0, "w2": 1.0}, 2, ["w1"]),  # idle alike: the newer of them
        ({"w0": 1.0, "w1": None, "w2": 0.0}, 0, ["w2", "w0", "w1"]),  # to zero: every one
        ({"w0": 1.0, "w1": 0.0}, 2, []),  # no shrink: none
        ({"w0": 1.0}, 3, []),  # a scale-out: none
        ({}, 0, []),
    ],
)
def test_a_scale_in_removes_idle_workers_first_then_those_holding_least(
    held: dict[str, float | None], wanted: int, removed: list[str]
) -> None:
    assert workers_to_remove(held, set(held), wanted) == removed


@pytest.mark.parametrize(
    ("held", "ready", "wanted", "removed"),
    [
        # an unready worker goes before a ready idle one, whatever it holds or cannot say
        ({"w0": 0.0, "w1": 3.0}, {"w0"}, 1, ["w1"]),
        ({"w0": None, "w1": 0.0}, {"w1"}, 1, ["w0"]),
        # of the unready, the cheapest first; then the ready ones in the usual order
        ({"w0": None, "w1": 2.0, "w2": 0.0, "w3": 1.0}, {"w2", "w3"}, 1, ["w1", "w0", "w2"]),
        # of the unready alike, the newest first, not the newest of all (a ready one)
        ({"w0": 0.0, "w1": 0.0, "w2": 0.0}, {"w2"}, 2, ["w1"]),
        # none ready: by cost alone, as when all are
        ({"w0": 1.0, "w1": 0.0}, set(), 1, ["w1"]),
        ({"w0": 0.0, "w1": 0.0}, set(), 2, []),  # no shrink: none, ready or not
    ],
)
def test_a_scale_in_removes_workers_not_ready_first_as_a_replicaset_does(
    held: dict[str, float | None], ready: set[str], wanted: int, removed: list[str]
) -> None:
    assert workers_to_remove(held, ready, wanted) == removed


def test_a_worker_that_cannot_say_costs_the_most_a_deletion_cost_can() -> None:
    """A count past an int32 (a broken or hostile metrics port) is not an annotation the API
    server takes, nor a cost above one that cannot say."""
    counts = (0.0, 2.0, 1e12, None)
    assert [removal_cost(count) for count in counts] == [0, 2, 2**31 - 2, 2**31 - 1]
