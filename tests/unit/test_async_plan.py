"""An async endpoint's spec -> the environment of its processes -> their settings: what the
spec says is what ``infermodes worker`` and ``infermodes async-api`` read."""

import pytest

from infermodes.endpoints import spec as s
from infermodes.endpoints.async_plan import async_api_env, async_endpoint, worker
from infermodes.settings import AsyncApiSettings, AsyncEndpoint, WorkerSettings


def endpoint(**block: object) -> s.EndpointSpec:
    return s.EndpointSpec.model_validate(
        {
            "mode": "async",
            "model": {"uri": "s3://m/model.tar.gz", "allowPickle": True},
            "async": {"outputPath": "s3://b/out/", **block},
        }
    )


def read_back(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_a_full_spec_reaches_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = endpoint(
        maxConcurrentInvocationsPerInstance=7,
        maxAttempts=5,
        notification={
            "topic": False,
            "successWebhook": "https://hooks.test/ok",
            "errorWebhook": "https://hooks.test/failed",
        },
    )
    plan = worker("abalone", spec)
    assert plan.command == ("infermodes", "worker")
    read_back(plan.env, monkeypatch)
    settings = WorkerSettings()
    assert (settings.endpoint, settings.model_uri, settings.allow_pickle) == (
        "abalone",
        "s3://m/model.tar.gz",
        True,
    )
    assert (settings.max_concurrent_invocations, settings.max_attempts) == (7, 5)
    assert settings.notify_topic is False
    assert settings.success_webhook_urls == ["https://hooks.test/ok"]
    assert settings.error_webhook_urls == ["https://hooks.test/failed"]


def test_defaults_reach_the_worker_as_the_spec_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    read_back(worker("ep", endpoint()).env, monkeypatch)
    settings = WorkerSettings()
    assert (settings.max_concurrent_invocations, settings.max_attempts) == (4, 3)
    assert settings.notify_topic is True
    assert settings.success_webhook_urls == settings.error_webhook_urls == []


def test_the_api_gets_each_endpoint_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    given = endpoint(
        inputPath="file:///data/in",
        failurePath="s3://b/failed",
        invocationTimeoutSeconds=60,
        maxAttempts=2,
    )
    read_back(async_api_env({"given": given, "defaults": endpoint()}), monkeypatch)
    settings = AsyncApiSettings()
    assert settings.endpoints == {
        "given": AsyncEndpoint(
            input_path="file:///data/in",
            output_path="s3://b/out/",
            failure_path="s3://b/failed",
            invocation_timeout_seconds=60,
            max_attempts=2,
        ),
        "defaults": AsyncEndpoint(
            input_path="s3://b/out/input",
            output_path="s3://b/out/",
            failure_path="s3://b/out/",
            invocation_timeout_seconds=900,
            max_attempts=3,
        ),
    }


def test_worker_and_api_agree_on_the_attempts_the_queue_allows() -> None:
    spec = endpoint(maxAttempts=9)
    assert async_endpoint(spec.async_).max_attempts == 9  # type: ignore[union-attr]
    assert worker("ep", spec).env["INFERMODES_WORKER_MAX_ATTEMPTS"] == "9"


def test_only_async_endpoints_have_an_async_plan() -> None:
    realtime = s.EndpointSpec.model_validate(
        {"mode": "realtime", "model": {"uri": "s3://m/x"}, "realtime": {}}
    )
    with pytest.raises(ValueError, match="a realtime endpoint has no spec.async"):
        worker("rt", realtime)
