import pytest

from infermodes.endpoints.demand import Demand
from infermodes.endpoints.scaling import (
    CounterSample,
    ScalerMemory,
    apply_cooldown,
    rate_per_minute,
    realtime_replicas,
    replicas_for_load,
    serverless_replicas,
)
from infermodes.endpoints.spec import RealtimeSpec, ServerlessSpec
from infermodes.metrics import ServerLoad


@pytest.mark.parametrize(
    ("load", "target", "current", "low", "high", "expected"),
    [
        (0, 100, 3, 1, 5, 1),  # zero load: down to min
        (0, 100, 0, 0, 5, 0),  # min 0 may reach zero
        (300, 100, 3, 1, 5, 3),  # exactly on target: keep
        (305, 100, 3, 1, 5, 3),  # inside the tolerance band: keep
        (400, 100, 3, 1, 5, 4),  # above target: one more
        (201, 100, 1, 1, 5, 3),  # ceil
        (10_000, 100, 2, 1, 5, 5),  # above max: clamp to max
        (50, 100, 1, 2, 5, 2),  # below min: clamp to min
        (1, 100, 0, 0, 5, 1),  # any load from zero wakes one
    ],
)
def test_replicas_for_load(load, target, current, low, high, expected) -> None:
    assert replicas_for_load(load, target, current, low, high) == expected


@pytest.mark.parametrize("target", [1e-300, 5e-324])
def test_a_tiny_target_asks_for_the_maximum_rather_than_overflowing(target: float) -> None:
    """The CRD takes any target above zero: load over such a target is infinite, and
    ``math.ceil`` of it raised OverflowError, every reconcile of the endpoint a traceback."""
    assert replicas_for_load(1e10, target, 1, 1, 4) == 4
    assert replicas_for_load(1e10, target, 0, 0, 4) == 4


def test_target_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        replicas_for_load(1, 0, 1, 1, 2)


def test_rate_per_minute() -> None:
    assert rate_per_minute(None, CounterSample(10, 5)) is None
    assert rate_per_minute(CounterSample(0, 100), CounterSample(30, 400)) == 600
    assert rate_per_minute(CounterSample(0, 100), CounterSample(60, 40)) == 40  # counter reset
    assert rate_per_minute(CounterSample(5, 1), CounterSample(5, 2)) is None


@pytest.mark.parametrize(
    ("current", "wanted", "since", "expected"),
    [
        (2, 4, 5, 2),  # scale-out cooldown (10 s) not over
        (2, 4, 11, 4),
        (4, 1, 100, 4),  # scale-in cooldown (300 s) not over
        (4, 1, 301, 1),
        (3, 3, 0, 3),
    ],
)
def test_cooldowns(current, wanted, since, expected) -> None:
    assert apply_cooldown(current, wanted, since, 10, 300) == expected


def test_replicas_the_bounds_add_start_the_scale_in_cooldown() -> None:
    """A raised minReplicas is a change like the autoscaler's: `up` scaled the replicas it
    added back in 3 s after minReplicas was lowered again, not scaleInCooldownSeconds (30 s)
    after the change, and the operator kept no lastScaleTime of it."""
    block = RealtimeSpec.model_validate(
        {"minReplicas": 2, "maxReplicas": 3, "scaling": {
            "metric": "InFlightRequestsPerInstance", "target": 2, "scaleInCooldownSeconds": 30}}
    )  # fmt: skip
    memory = ScalerMemory()
    idle = dict.fromkeys("ab", ServerLoad(invocations_total=0, in_flight=0))
    assert realtime_replicas(block, 1, lambda: idle, memory, 1000.0, True) == 2
    lowered = block.model_copy(update={"min_replicas": 1})
    assert realtime_replicas(lowered, 2, lambda: idle, memory, 1010.0, True) == 2
    assert realtime_replicas(lowered, 2, lambda: idle, memory, 1031.0, True) == 1


def in_flight_block(**fields: object) -> RealtimeSpec:
    return RealtimeSpec.model_validate({
        "minReplicas": 1, "maxReplicas": 5, **fields,
        "scaling": {"metric": "InFlightRequestsPerInstance", "target": 2,
                    "scaleInCooldownSeconds": 30}})  # fmt: skip


def test_a_new_endpoint_starts_at_its_initial_replicas_and_scales_from_there() -> None:
    """The platform's InitialInstanceCount 3 with ManagedInstanceScaling 1..5 started at 1."""
    block = in_flight_block(initialReplicas=3)
    memory = ScalerMemory()
    idle = dict.fromkeys("abc", ServerLoad(invocations_total=0, in_flight=0))
    assert realtime_replicas(block, None, lambda: idle, memory, 1000.0, True) == 3
    assert realtime_replicas(block, 3, lambda: idle, memory, 1010.0, True) == 3  # no signal yet
    assert realtime_replicas(block, 3, lambda: idle, memory, 1031.0, True) == 1  # idle: scales in
    assert realtime_replicas(in_flight_block(), None, lambda: idle, ScalerMemory(), 0.0, True) == 1


def test_a_changed_initial_replicas_starts_the_endpoint_there_again() -> None:
    """As UpdateEndpoint starts the new config's variant at its InitialInstanceCount; an
    actuator that just started (a fresh memory) keeps the replicas it finds."""
    memory = ScalerMemory()
    busy = dict.fromkeys("ab", ServerLoad(invocations_total=0, in_flight=4))
    assert realtime_replicas(in_flight_block(initialReplicas=2), 2, dict, memory, 0.0, False) == 2
    changed = in_flight_block(initialReplicas=4)
    assert realtime_replicas(changed, 2, lambda: busy, memory, 10.0, True) == 4
    assert memory.last_change_at == 10.0
    assert realtime_replicas(changed, 4, lambda: idle_of(4), memory, 20.0, True) == 4  # cooldown
    assert realtime_replicas(changed, 5, dict, ScalerMemory(), 30.0, False) == 5
    assert realtime_replicas(in_flight_block(), 3, dict, memory, 40.0, False) == 3  # unset: kept


def idle_of(replicas: int) -> dict[str, ServerLoad]:
    return {str(n): ServerLoad(invocations_total=0, in_flight=0) for n in range(replicas)}


@pytest.mark.parametrize("initial", [0, 6])
def test_initial_replicas_lie_within_the_range(initial: int) -> None:
    with pytest.raises(ValueError, match="initialReplicas|greater than or equal"):
        in_flight_block(initialReplicas=initial)


def test_a_serverless_endpoint_made_realtime_starts_at_its_initial_replicas() -> None:
    """UpdateEndpoint from a serverless config to one of InitialInstanceCount 3 (managed 1..5):
    up started it at 3 (a new realtime spec), the operator kept the serverless replica count
    (one Deployment, its memory saw no initialReplicas before): one rule for both."""
    memory = ScalerMemory()
    serverless = ServerlessSpec()
    assert serverless_replicas(serverless, 1, Demand(1, 0, 100.0), memory, 5.0, 100.0) == 1
    block = in_flight_block(initialReplicas=3)
    assert realtime_replicas(block, 1, lambda: idle_of(1), memory, 10.0, True) == 3
