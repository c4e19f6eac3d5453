import pytest

from infermodes.endpoints.scaling import (
    CounterSample,
    apply_cooldown,
    rate_per_minute,
    replicas_for_load,
)


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
