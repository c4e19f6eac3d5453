"""The batch runner's Prometheus metrics, run in this process over file:// storage and read back
from the exposition text as a scrape of its side port would read them."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infermodes.storage import Storage
from infermodes.workers.batch.records import MIB, pack_lines
from tests.conftest import AbaloneModel
from tests.support.batch import csv_text, run_in_process, sample_rows


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_rows_units_minibatches_and_predict_latency_are_counted(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    rows = sample_rows(abalone_model.test_rows, 30_000, seed=7)
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.csv").write_bytes(csv_text(rows))  # about 2.1 MB
    minibatches = len(list(pack_lines(iter([csv_text(rows)]), MIB)))
    assert minibatches > 1
    (tmp_path / "in/b.csv").write_bytes(csv_text(rows[:10]) + b"1,2,3\n")
    registry = CollectorRegistry()
    summary = run_in_process(abalone_model.tarball, tmp_path, Storage(), registry,
                             max_payload_in_mb=1)  # fmt: skip
    assert summary.records == 30_000
    found = samples(registry)
    assert found["infermodes_model_rows_predicted_total", ()] == 30_000
    assert found["infermodes_batch_units_assigned", ()] == 2
    assert found["infermodes_batch_units_total", (("outcome", "succeeded"),)] == 1
    assert found["infermodes_batch_units_total", (("outcome", "failed"),)] == 1
    assert (
        found["infermodes_batch_minibatch_duration_seconds_count", (("outcome", "ok"),)]
        == minibatches
    )
    assert found["infermodes_model_predict_duration_seconds_count", ()] == minibatches
    assert found["infermodes_batch_retries_total", ()] == 0
    assert found["infermodes_batch_input_bytes_total", ()] == (tmp_path / "in/a.csv").stat().st_size
