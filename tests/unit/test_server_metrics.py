"""The model server's metric updates, bound once (``ServerMetrics`` methods) and written by the
forked workers' values straight into their mmap files, export exactly what prometheus_client's
own methods and values export for the same requests."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, values
from prometheus_client.parser import text_string_to_metric_families

from infermodes.metrics import (
    INVOCATIONS_ROUTE,
    MULTIPROCESS_ENV,
    ServerMetrics,
    render,
    use_forked_worker_values,
)

DURATIONS = [0.00004, 0.0001, 0.00031, 0.0042, 0.9, 75.0]  # on, below, above and past bounds
SIZES = [1, 64, 65, 5000, 1 << 30, (1 << 30) + 1]


def exported(directory: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> dict[str, float]:
    """What /metrics shows after the same requests, recorded the fast way or prometheus's."""
    monkeypatch.setenv(MULTIPROCESS_ENV, str(directory))
    if fast:
        use_forked_worker_values()
    else:
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    metrics = ServerMetrics(CollectorRegistry())
    for index, (seconds, size) in enumerate(zip(DURATIONS, SIZES, strict=True)):
        status = 200 if index % 2 else 400
        if fast:
            metrics.request_started()
            metrics.body_received(size)
            metrics.predicted(index + 1, seconds / 10)
            metrics.request_took(INVOCATIONS_ROUTE, status, seconds)
            if index:  # one request still in flight
                metrics.request_ended()
        else:
            metrics.requests_in_flight.inc()
            metrics.request_body_size.observe(size)
            metrics.predict_duration.observe(seconds / 10)
            metrics.rows_predicted.inc(index + 1)
            metrics.request_duration.labels(INVOCATIONS_ROUTE, str(status)).observe(seconds)
            if index:
                metrics.requests_in_flight.dec()
    payload, _ = render(CollectorRegistry())
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(payload.decode())
        for sample in family.samples
        if sample.name.startswith("infermodes_")
    }


def test_fast_updates_export_what_prometheus_client_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored afterwards
    (tmp_path / "theirs").mkdir()
    (tmp_path / "ours").mkdir()
    theirs = exported(tmp_path / "theirs", monkeypatch, fast=False)
    ours = exported(tmp_path / "ours", monkeypatch, fast=True)
    assert ours == theirs
    assert theirs["infermodes_http_requests_in_flight[]"] == 1
    assert theirs["infermodes_model_rows_predicted_total[]"] == 21
