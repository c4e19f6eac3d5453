import pytest

from infermodes.endpoints.scaling import (
    CounterSample,
    ScalerMemory,
    apply_cooldown,
    rate_per_minute,
    realtime_replicas,
    replicas_for_load,
)
from infermodes.endpoints.spec import RealtimeSpec
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
