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


def test_the_worker_is_told_its_memory_limit_from_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod's limit, which ``up``'s processes cannot read from a cgroup they share."""
    read_back(worker("ep", endpoint()).env, monkeypatch)
    assert WorkerSettings().memory_bytes == 1 << 30  # resources.memory's default, 1Gi
    read_back(worker("ep", endpoint(resources={"memory": "200Mi"})).env, monkeypatch)
    assert WorkerSettings().memory_bytes == 200 << 20


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("1Gi", 1 << 30),
        ("1.5Gi", 3 << 29),
        ("768Mi", 768 << 20),
        ("0.5Ki", 512),
        ("129M", 129_000_000),
        ("2k", 2000),
        ("1T", 10**12),
        ("1Ti", 1 << 40),
        ("128974848", 128974848),
        ("1500m", 2),  # a fraction of a byte rounds up, as the kubelet's limit does
        ("0.1", 1),
        ("9" * 5000 + "Ti", 2**63 - 1),  # the pattern has no length limit
        # the rest of Kubernetes' grammar: a decimal exponent (e or E and a whole number; "E"
        # alone is an exa), P, E, Pi and Ei, n and u, "1." and ".5", a "+"
        ("1e9", 10**9),
        ("1E3", 1000),
        ("2.5e-1", 1),
        ("1.5e+3", 1500),
        ("1P", 10**15),
        ("1E", 10**18),
        ("1Pi", 1 << 50),
        ("1Ei", 1 << 60),
        ("8Ei", 2**63 - 1),
        ("1500000000n", 2),
        ("1500000u", 2),
        ("1.", 1),
        (".5Ki", 512),
        ("+1Gi", 1 << 30),
        ("1e" + "9" * 18, 2**63 - 1),  # past int64: capped, never computed
        ("1e-" + "9" * 18, 1),
        ("0." + "0" * 3000 + "1e3005", 10_000),  # exact however long the number
    ],
)
def test_a_memory_quantity_in_bytes(quantity: str, expected: int) -> None:
    assert s.quantity_bytes(quantity) == expected


@pytest.mark.parametrize(
    "quantity",
    ["", "0", "1Gb", "-1Gi", " 1Gi", "1e", "1e1.5", "1e3Ki", "1K", "0e3", ".", "1e" + "9" * 19],
)
def test_a_text_that_is_no_quantity_is_refused_by_name(quantity: str) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        s.quantity_bytes(quantity)


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
