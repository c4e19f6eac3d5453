"""The managed platform's API on the test control plane, driven by boto3 the way a user would
break it: a serverless endpoint's cold start with more callers than MaxConcurrency, updates
while it is invoked (a bigger config, a model that cannot load, back; not to real-time, whose
rollout's surge pod the test node's two CPUs cannot place), a second
update while one is in progress, a delete while it is invoked, and what DescribeEndpoint,
ListEndpoints and UpdateEndpoint say of an endpoint being deleted. Every invocation is counted;
every prediction equals the booster's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.cluster.harness import Cluster
from tests.conftest import AbaloneModel
from tests.e2e.operator_support import (
    OPERATOR_NAMESPACE,
    Tools,
    gateway_url,
    installed_chart,
    to_csv,
)
from tests.support.processes import wait_until
from tests.support.s3 import S3Endpoint
from tests.support.seaweedfs import seaweedfs_server

KEY_ID, SECRET = "AKIAE2EHOSTILE", "e2e/hostile+secret="
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::123456789012:role/infermodes-e2e"
FAST = {"Delay": 1, "MaxAttempts": 180}
HOLD = "hostile.infermodes.dev/hold"  # a finalizer of the test's own
IE = f"/apis/infermodes.dev/v1alpha1/namespaces/{OPERATOR_NAMESPACE}/inferenceendpoints"


@pytest.fixture(scope="module")
def store() -> Iterator[S3Endpoint]:
    with seaweedfs_server() as endpoint:
        yield endpoint


def secret(cluster: Cluster, name: str, data: dict[str, str]) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}
    cluster.api.post(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets", body)


@pytest.fixture(scope="module")
def tools(k8s_cluster: Cluster, store: S3Endpoint) -> Iterator[Tools]:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    k8s_cluster.api.post("/api/v1/namespaces", namespace)
    secret(k8s_cluster, "s3", store.env)
    secret(k8s_cluster, "platform-keys", {"accessKeys": f"{KEY_ID}:{SECRET}"})
    values = {"gateway.auth.secretRef.name": "platform-keys",
              "gateway.platform.storageSecretName": "s3"}  # fmt: skip
    with installed_chart(k8s_cluster, **values) as tools:
        yield tools
        tools.kubectl("delete", "inferenceendpoints", "--all", "-n", OPERATOR_NAMESPACE,
                      "--timeout=60s")  # fmt: skip


@pytest.fixture(scope="module")
def bucket(store: S3Endpoint, abalone_model: AbaloneModel) -> Any:
    client: Any = store.client()
    client.create_bucket(Bucket="hostile")
    client.upload_file(str(abalone_model.tarball), "hostile", "model/model.tar.gz")
    return client


def client(tools: Tools, service: str) -> Any:
    """The runtime client does not retry (every invocation's own answer is counted); the
    control plane's does, as boto3 by default (a CRD the API server just made answers 429
    "storage is (re)initializing" for a moment, which the gateway passes on as a 500)."""
    url = gateway_url(tools)
    assert url is not None
    attempts = 1 if service == "sagemaker-runtime" else 5
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"},
                                      read_timeout=120))  # fmt: skip


@pytest.fixture(autouse=True)
def platform_logs(tools: Tools, request: pytest.FixtureRequest) -> Iterator[None]:
    """The pods' logs of the platform's namespace in a failing test's report."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        logs = tools.cluster.namespace_logs(OPERATOR_NAMESPACE)
        request.node.add_report_section("teardown", "platform pod logs", logs)


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


class Invoker:
    """Counts every InvokeEndpoint: its body's predictions checked, or its error code."""

    def __init__(self, runtime: Any, abalone_model: AbaloneModel, name: str) -> None:
        self.runtime, self.name = runtime, name
        self.rows = abalone_model.test_rows
        booster: Any = abalone_model.booster()
        self.booster = booster
        self.outcomes: list[str] = []  # "200" or an error code
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.wrong: list[str] = []

    def invoke(self, start: int) -> str:
        part = self.rows[start % len(self.rows) :][:20]
        try:
            answer = self.runtime.invoke_endpoint(EndpointName=self.name, ContentType="text/csv",
                                                  Body=to_csv(part))  # fmt: skip
            got = np.array(answer["Body"].read().split(), dtype=np.float32)
            if not np.array_equal(got, self.booster.inplace_predict(part)):
                self.wrong.append(f"rows {start}: {got[:3]}")
            outcome = "200"
        except ClientError as exc:
            outcome = error_code(exc)
        except Exception as exc:  # no answer at all (a connection error): counted as such
            outcome = f"no answer: {type(exc).__name__}: {exc}"
        with self.lock:
            self.outcomes.append(outcome)
        return outcome

    def burst(self, callers: int) -> list[str]:
        gate = threading.Barrier(callers)

        def one(index: int) -> str:
            gate.wait(timeout=30)
            return self.invoke(index * 31)

        with ThreadPoolExecutor(callers) as pool:
            return list(pool.map(one, range(callers)))

    def start(self, clients: int) -> None:
        def loop(index: int) -> None:
            deadline = time.monotonic() + 500
            sent = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.invoke(index * 97 + sent * 7)
                sent += 1

        self.threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=150)
        assert not any(t.is_alive() for t in self.threads), "an invocation never got its answer"
        assert not self.wrong, self.wrong[:3]

    def more(self, count: int, what: str) -> None:
        seen = len(self.outcomes)
        wait_until(lambda: len(self.outcomes) >= seen + count, 120, f"{count} answers {what}")

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {o: self.outcomes.count(o) for o in set(self.outcomes)}


def describe(sagemaker: Any, name: str) -> dict[str, Any]:
    found: dict[str, Any] = sagemaker.describe_endpoint(EndpointName=name)
    return found


def test_boto3_serverless_lifecycle_under_invocations(
    tools: Tools, bucket: Any, abalone_model: AbaloneModel
) -> None:
    sagemaker, runtime = client(tools, "sagemaker"), client(tools, "sagemaker-runtime")
    container = {"Image": IMAGE, "ModelDataUrl": "s3://hostile/model/model.tar.gz"}
    sagemaker.create_model(ModelName="Hostile-XGB", ExecutionRoleArn=ROLE,
                           PrimaryContainer=container)  # fmt: skip
    sagemaker.create_model(ModelName="Missing-XGB", ExecutionRoleArn=ROLE, PrimaryContainer={
        **container, "ModelDataUrl": "s3://hostile/missing/model.tar.gz"})  # fmt: skip

    def serverless(config: str, model: str, memory: int, concurrency: int) -> None:
        limits = {"MemorySizeInMB": memory, "MaxConcurrency": concurrency}
        variant = {"VariantName": "AllTraffic", "ModelName": model, "ServerlessConfig": limits}
        sagemaker.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[variant])

    serverless("sl-2", "Hostile-XGB", 1024, 2)
    serverless("sl-4", "Hostile-XGB", 1024, 4)  # 2048 MB: 1 CPU, past the test node's room
    serverless("sl-missing", "Missing-XGB", 1024, 4)

    sagemaker.create_endpoint(EndpointName="Hostile", EndpointConfigName="sl-2")
    assert describe(sagemaker, "Hostile")["EndpointStatus"] in ("Creating", "InService")
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="Hostile", WaiterConfig=FAST)
    described = describe(sagemaker, "Hostile")
    variant = described["ProductionVariants"][0]
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (0, 0), variant
    assert variant["CurrentServerlessConfig"]["MaxConcurrency"] == 2

    # a cold start with six callers and MaxConcurrency 2: served or throttled, nothing else
    invoker = Invoker(runtime, abalone_model, "Hostile")
    outcomes = invoker.burst(6)
    assert set(outcomes) <= {"200", "ThrottlingException"}, outcomes
    assert outcomes.count("200") >= 2, outcomes
    assert not invoker.wrong, invoker.wrong

    invoker.start(1)
    try:
        invoker.more(5, "warm")
        sagemaker.update_endpoint(EndpointName="Hostile", EndpointConfigName="sl-4")
        assert describe(sagemaker, "Hostile")["EndpointStatus"] == "Updating"
        with pytest.raises(ClientError) as again:  # one update at a time
            sagemaker.update_endpoint(EndpointName="Hostile", EndpointConfigName="sl-2")
        assert error_code(again.value) == "ValidationException"
        assert "in-progress" in str(again.value)
        sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="Hostile",
                                                         WaiterConfig=FAST)  # fmt: skip
        described = describe(sagemaker, "Hostile")
        assert described["EndpointConfigName"] == "sl-4"
        desired = described["ProductionVariants"][0]["DesiredServerlessConfig"]
        assert (desired["MemorySizeInMB"], desired["MaxConcurrency"]) == (1024, 4), desired
        invoker.more(10, "on sl-4")

        # a config whose model is not there, while warm: the warm replica keeps serving
        sagemaker.update_endpoint(EndpointName="Hostile", EndpointConfigName="sl-missing")

        def blocked() -> bool:
            found = describe(sagemaker, "Hostile")
            return "ModelLoadFailed" in found.get("FailureReason", "")

        wait_until(blocked, 180, "the update's FailureReason", interval=1)
        assert describe(sagemaker, "Hostile")["EndpointStatus"] == "Updating"
        invoker.more(10, "while the update cannot roll out")
        sagemaker.update_endpoint(EndpointName="Hostile", EndpointConfigName="sl-4")
        sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="Hostile",
                                                         WaiterConfig=FAST)  # fmt: skip
        invoker.more(10, "back on sl-4")
    finally:
        invoker.finish()
    served = invoker.outcomes[6:]
    assert set(served) == {"200"}, invoker.counts()

    # deleted while invoked: served, or told the endpoint is not there
    invoker.outcomes.clear()
    invoker.stop.clear()
    invoker.start(2)
    try:
        invoker.more(10, "before the delete")
        sagemaker.delete_endpoint(EndpointName="Hostile")
        sagemaker.get_waiter("endpoint_deleted").wait(EndpointName="Hostile", WaiterConfig=FAST)

        def refused_since() -> bool:
            with invoker.lock:
                return invoker.outcomes[-4:] == ["ValidationError"] * 4

        wait_until(refused_since, 120, "four ValidationErrors in a row after the delete")
    finally:
        invoker.finish()
    assert set(invoker.outcomes) <= {"200", "ValidationError"}, invoker.counts()
    for config in ("sl-2", "sl-4", "sl-missing"):
        sagemaker.delete_endpoint_config(EndpointConfigName=config)
    for model in ("Hostile-XGB", "Missing-XGB"):
        sagemaker.delete_model(ModelName=model)


def test_an_endpoint_being_deleted_is_deleting_and_takes_no_update(
    tools: Tools, bucket: Any
) -> None:
    """DeleteEndpoint of an endpoint that something else still holds (a finalizer of another
    controller, here the test's): until it is gone, Describe and List say Deleting, not the
    phase it had, and UpdateEndpoint is refused, as the platform refuses one of an endpoint it
    is deleting."""
    sagemaker = client(tools, "sagemaker")
    sagemaker.create_model(ModelName="Held-XGB", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "ModelDataUrl": "s3://hostile/model/model.tar.gz"})  # fmt: skip
    sagemaker.create_endpoint_config(EndpointConfigName="held", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "Held-XGB",
        "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2}}])  # fmt: skip
    sagemaker.create_endpoint(EndpointName="Held", EndpointConfigName="held")
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="Held", WaiterConfig=FAST)
    api = tools.cluster.api
    finalizers = api.get(f"{IE}/held")["metadata"].get("finalizers") or []
    api.merge_patch(f"{IE}/held", {"metadata": {"finalizers": [*finalizers, HOLD]}})
    try:
        sagemaker.delete_endpoint(EndpointName="Held")
        assert describe(sagemaker, "Held")["EndpointStatus"] == "Deleting"
        listed = sagemaker.list_endpoints(NameContains="Held")["Endpoints"]
        assert [e["EndpointStatus"] for e in listed] == ["Deleting"], listed
        with pytest.raises(ClientError) as refused:
            sagemaker.update_endpoint(EndpointName="Held", EndpointConfigName="held")
        assert error_code(refused.value) == "ValidationException"
    finally:
        finalizers = api.get(f"{IE}/held")["metadata"].get("finalizers") or []
        kept = [f for f in finalizers if f != HOLD]
        api.merge_patch(f"{IE}/held", {"metadata": {"finalizers": kept}})
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName="Held", WaiterConfig=FAST)
    sagemaker.delete_endpoint_config(EndpointConfigName="held")
    sagemaker.delete_model(ModelName="Held-XGB")
