"""Process plans: what a spec says is what the process's settings read back."""

import pytest

from infermodes.endpoints import plan
from infermodes.endpoints import spec as s
from infermodes.endpoints.plan import env_name, model_server, settings_env
from infermodes.settings import BatchSettings, ServeSettings, WorkerSettings


def realtime(**model: object) -> s.EndpointSpec:
    return s.EndpointSpec.model_validate(
        {"mode": "realtime", "model": {"uri": "s3://m/model.tar.gz", **model}, "realtime": {}}
    )


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_model_server_plan_reads_back_as_the_spec_says(
    allow_pickle: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = model_server(realtime(allowPickle=allow_pickle), workers=3)
    assert plan.command == ("infermodes", "serve")
    for name, value in plan.env.items():
        monkeypatch.setenv(name, value)
    settings = ServeSettings()
    assert settings.model_uri == "s3://m/model.tar.gz"
    assert (settings.workers, settings.port, settings.allow_pickle) == (3, 8080, allow_pickle)


def test_inference_output_travels_from_the_spec_to_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "INFERMODES_SERVE_INFERENCE_OUTPUT" not in model_server(realtime(), workers=1).env
    plan = model_server(realtime(inferenceOutput="predicted_label,probabilities"), workers=1)
    for name, value in plan.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SAGEMAKER_INFERENCE_OUTPUT", "labels")  # the infermodes name wins
    assert ServeSettings().inference_output == "predicted_label,probabilities"
    monkeypatch.delenv("INFERMODES_SERVE_INFERENCE_OUTPUT")
    assert ServeSettings().inference_output == "labels"  # as the platform's container reads it


def test_names_come_from_the_settings_class() -> None:
    assert env_name(ServeSettings, "model_uri") == "INFERMODES_SERVE_MODEL_URI"
    assert env_name(WorkerSettings, "max_attempts") == "INFERMODES_WORKER_MAX_ATTEMPTS"
    with pytest.raises(KeyError, match="no setting 'modle_uri'"):
        env_name(ServeSettings, "modle_uri")


def test_values_are_written_the_way_settings_read_them(monkeypatch: pytest.MonkeyPatch) -> None:
    env = settings_env(
        WorkerSettings,
        endpoint="ep",
        model_uri="file:///m",
        allow_pickle=False,
        metrics_port=None,
    )
    assert "INFERMODES_WORKER_METRICS_PORT" not in env  # None: the default applies
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = WorkerSettings()
    assert (settings.endpoint, settings.allow_pickle, settings.metrics_port) == ("ep", False, 9090)


@pytest.mark.parametrize(
    ("exit_code", "failures", "again"),
    [
        (-9, 1, True),  # SIGKILLed: the OOM killer
        (-11, 2, True),  # a crash, the second time
        (-9, 3, False),  # out of retries, as the Job's backoffLimitPerIndex
        (0, 1, False),  # done
        (None, 1, False),  # never ran
        *((code, 1, False) for code in plan.PERMANENT_BATCH_EXIT_CODES),  # the same again
    ],
)
def test_a_batch_instance_runs_again_as_the_operator_s_job_retries_its_index(
    exit_code: int | None, failures: int, again: bool
) -> None:
    assert plan.batch_instance_runs_again(exit_code, failures) is again


def test_a_batch_instance_is_told_its_memory_limit_from_the_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pod's limit, which ``up``'s instances cannot read from a cgroup they share."""
    spec = s.EndpointSpec.model_validate(
        {
            "mode": "batch",
            "model": {"uri": "s3://m/model.tar.gz"},
            "batch": {
                "input": {"uri": "s3://b/in/"},
                "output": {"uri": "s3://b/out/"},
                "resources": {"memory": "1536Mi"},
            },
        }
    )
    for name, value in plan.batch_instance(spec, "run-1").env.items():
        monkeypatch.setenv(name, value)
    assert BatchSettings().memory_bytes == 1536 << 20
