"""BatchSettings: names follow the spec's batch block; the index also comes from Kubernetes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infermodes.settings import PAYLOAD_RULE, BatchSettings

REQUIRED = {"model_uri": "m", "input_uri": "s3://b/in/", "output_uri": "s3://b/out/"}


@pytest.mark.parametrize("variable", ["INFERMODES_BATCH_INSTANCE_INDEX", "JOB_COMPLETION_INDEX"])
def test_the_instance_index_comes_from_either_variable(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "2")
    monkeypatch.setenv("INFERMODES_BATCH_INSTANCE_COUNT", "3")
    assert BatchSettings(**REQUIRED).instance_index == 2


def test_a_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    settings = BatchSettings(**REQUIRED, instance_index=0, instance_count=2)
    assert settings.instance_index == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_payload_in_mb": 50, "max_concurrent_transforms": 3}, PAYLOAD_RULE),
        ({"instance_index": 2, "instance_count": 2}, "must be below instance_count"),
        ({"content_type": "text/libsvm", "join_source": "Input"}, "not libsvm"),
        ({"content_type": "application/jsonlines", "join_source": "Input"}, "like with like"),
        ({"invocations_max_retries": 4}, "less than or equal to 3"),
        ({"split_type": "TFRecord"}, "'None' or 'Line'"),
    ],
)
def test_inconsistent_settings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BatchSettings(**REQUIRED, **fields)
