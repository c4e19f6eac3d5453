"""Scaling rules as pure functions: observed load -> desired replicas.

The operator (on Kubernetes) and the local runtime are two actuators of these decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    wanted = math.ceil(total_load / target_per_replica - 1e-9) if total_load > 0 else 0
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
