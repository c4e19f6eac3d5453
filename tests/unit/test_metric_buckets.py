"""Histograms reach the longest duration their processes can see: a request queued for hours
or a mini-batch attempt at its timeout lands in a bucket of its own, not only in ``+Inf``."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from infermodes.metrics import BatchMetrics, WorkerMetrics, render
from infermodes.queueing.messages import MAX_TTL_SECONDS
from infermodes.settings import MAX_INVOCATION_TIMEOUT_SECONDS

LONGEST_REQUEST = MAX_TTL_SECONDS + MAX_INVOCATION_TIMEOUT_SECONDS  # queued, then processed


def finite_buckets_holding(registry: CollectorRegistry, name: str) -> list[float]:
    """The finite ``le`` bounds of ``name``'s buckets that counted the one observation."""
    text = render(registry)[0].decode()
    return [
        float(sample.labels["le"])
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == f"{name}_bucket" and sample.labels["le"] != "+Inf" and sample.value
    ]


@pytest.mark.parametrize(
    ("make", "name", "seconds"),
    [(lambda m: m.time_in_backlog, "infermodes_async_time_in_backlog_seconds", MAX_TTL_SECONDS),
     (lambda m: m.total_processing_time.labels("success"),
      "infermodes_async_total_processing_time_seconds", LONGEST_REQUEST),
     (lambda m: m.processing_duration.labels("success"),
      "infermodes_async_processing_duration_seconds", MAX_INVOCATION_TIMEOUT_SECONDS)],
)  # fmt: skip
def test_an_async_request_that_lived_the_longest_allowed_lands_in_a_bucket(
    make: object, name: str, seconds: float
) -> None:
    registry = CollectorRegistry()
    histogram: Histogram = make(WorkerMetrics(registry))  # type: ignore[operator]  # a lambda
    histogram.observe(seconds)
    assert finite_buckets_holding(registry, name), f"{name}: {seconds} s only in +Inf"


def test_a_mini_batch_attempt_at_its_longest_timeout_lands_in_a_bucket() -> None:
    registry = CollectorRegistry()
    BatchMetrics(registry).minibatch_duration.labels("ok").observe(MAX_INVOCATION_TIMEOUT_SECONDS)
    name = "infermodes_batch_minibatch_duration_seconds"
    assert finite_buckets_holding(registry, name), f"{name}: only in +Inf"
