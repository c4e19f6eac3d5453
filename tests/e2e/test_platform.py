"""The managed platform's API on the test control plane, through boto3's real ``sagemaker`` and
``sagemaker-runtime`` clients pointed at the gateway of the installed chart and signed with a key
from its Secret: the seed flow on a serverless endpoint, an async endpoint writing to S3
(SeaweedFS) over RabbitMQ, a transform job, all as objects kubectl sees; a wrong key is refused
with the platform's 403 codes. And the Kubernetes store on its own.

The same API as a user would break it: a serverless endpoint's cold start with more callers than
MaxConcurrency, updates while it is invoked (a bigger config, a model that cannot load, back; not
to real-time, whose rollout's surge pod the test node's two CPUs cannot place), a second update
while one is in progress, a delete while it is invoked, and what DescribeEndpoint, ListEndpoints
and UpdateEndpoint say of an endpoint being deleted. Every invocation is counted; every
prediction equals the booster's."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError

from infermodes.gateway.kube import Credentials, KubeApi
from infermodes.gateway.platform_store import KubePlatformStore
from infermodes.platform.store import AlreadyExists, LimitExceeded, NotFound, RecordKind, Refused
from tests.cluster.harness import Cluster
from tests.conftest import AbaloneModel
from tests.e2e.operator_support import (
    OPERATOR_NAMESPACE,
    Tools,
    edit_finalizers,
    endpoint_manifest,
    gateway_url,
    get_endpoint,
    installed_chart,
    secret,
    to_csv,
)
from tests.e2e.test_serverless import serverless_manifest
from tests.support.processes import wait_until
from tests.support.rabbitmq import Broker, rabbitmq_broker
from tests.support.s3 import S3Endpoint, read_when_there

KEY_ID, SECRET = "AKIAE2EPLATFORM", "e2e/platform+secret="
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::123456789012:role/infermodes-e2e"
FAST = {"Delay": 1, "MaxAttempts": 180}  # boto3's waiters, polled every second
HOLD = "hostile.infermodes.dev/hold"  # a finalizer of the test's own
IE = f"/apis/infermodes.dev/v1alpha1/namespaces/{OPERATOR_NAMESPACE}/inferenceendpoints"


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with rabbitmq_broker() as running:
        yield running


@pytest.fixture(scope="module")
def tools(k8s_cluster: Cluster, store: S3Endpoint, broker: Broker) -> Iterator[Tools]:
    """The chart with access keys, the broker and S3: the platform API keeps its objects in the
    release's namespace, where the Secrets its endpoints reference are too."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    k8s_cluster.api.post("/api/v1/namespaces", namespace)
    secret(k8s_cluster, "s3", store.env)
    secret(k8s_cluster, "infermodes-rabbitmq",
           {"url": broker.amqp_url, "managementUrl": broker.management_url})  # fmt: skip
    secret(k8s_cluster, "platform-keys", {"accessKeys": f"AKIAOTHER:other,{KEY_ID}:{SECRET}"})
    values = {
        "rabbitmq.secretRef.name": "infermodes-rabbitmq",
        "gateway.storageSecretRef.name": "s3",
        "gateway.auth.secretRef.name": "platform-keys",
        "gateway.platform.storageSecretName": "s3",
        "gateway.platform.brokerSecretName": "infermodes-rabbitmq",
    }
    with installed_chart(k8s_cluster, **values) as tools:
        yield tools
        # what the API left (a transform job has no delete) carries the operator's finalizer:
        # it must go while the operator runs, or the namespace never does
        tools.kubectl("delete", "inferenceendpoints", "--all", "-n", OPERATOR_NAMESPACE,
                      "--timeout=60s")  # fmt: skip


@pytest.fixture(scope="module")
def bucket(store: S3Endpoint, abalone_model: AbaloneModel) -> Any:
    client: Any = store.client()
    client.create_bucket(Bucket="platform")
    client.upload_file(str(abalone_model.tarball), "platform", "model/model.tar.gz")
    return client


def client(tools: Tools, service: str, key_id: str = KEY_ID, secret: str = SECRET) -> Any:
    url = gateway_url(tools)
    assert url is not None
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        config=Config(retries={"total_max_attempts": 2}))  # fmt: skip


def counting_client(tools: Tools, service: str) -> Any:
    """The runtime client does not retry (every invocation's own answer is counted); the
    control plane's does, as boto3 by default (a CRD the API server just made answers 429
    "storage is (re)initializing" for a moment, which the gateway answers as the platform's
    ThrottlingException)."""
    url = gateway_url(tools)
    assert url is not None
    attempts = 1 if service == "sagemaker-runtime" else 5
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"},
                                      read_timeout=120))  # fmt: skip


def expected(abalone_model: AbaloneModel, rows: np.ndarray) -> np.ndarray:
    found: np.ndarray = abalone_model.booster().inplace_predict(rows)  # type: ignore[attr-defined]
    return found


def scores(text: bytes) -> np.ndarray:
    return np.array(text.decode().replace(",", "\n").split(), dtype=np.float32)


@pytest.fixture(autouse=True)
def platform_logs(tools: Tools, request: pytest.FixtureRequest) -> Iterator[None]:
    """The pods' logs of the platform's namespace in a failing test's report."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        logs = tools.cluster.namespace_logs(OPERATOR_NAMESPACE)
        request.node.add_report_section("teardown", "platform pod logs", logs)


def deleted(sagemaker: Any, endpoint: str, config: str) -> None:
    """DeleteEndpoint until boto3's waiter sees it gone, then its config: the test node's two
    cores hold one endpoint's pods at a time besides the operator and the gateway."""
    sagemaker.delete_endpoint(EndpointName=endpoint)
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName=endpoint, WaiterConfig=FAST)
    sagemaker.delete_endpoint_config(EndpointConfigName=config)


def test_boto3_drives_serverless_async_and_batch_through_the_gateway(
    tools: Tools, bucket: Any, abalone_model: AbaloneModel
) -> None:
    sagemaker, runtime = client(tools, "sagemaker"), client(tools, "sagemaker-runtime")
    rows = abalone_model.test_rows[:40]
    sagemaker.create_model(ModelName="Abalone-XGB", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "ModelDataUrl": "s3://platform/model/model.tar.gz"})  # fmt: skip
    variant = {"VariantName": "AllTraffic", "ModelName": "Abalone-XGB"}

    # the seed flow: InService by boto3's own waiter, predictions equal to the booster's
    sagemaker.create_endpoint_config(EndpointConfigName="Abalone-Serverless", ProductionVariants=[
        {**variant, "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 5}}],
    )  # fmt: skip
    sagemaker.create_endpoint(EndpointName="Abalone-Seed", EndpointConfigName="Abalone-Serverless")
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="Abalone-Seed", WaiterConfig=FAST)
    answer = runtime.invoke_endpoint(EndpointName="Abalone-Seed", ContentType="text/csv",
                                     Accept="text/csv", Body=to_csv(rows))  # fmt: skip
    np.testing.assert_allclose(scores(answer["Body"].read()), expected(abalone_model, rows),
                               rtol=1e-6)  # fmt: skip

    # everything is an object kubectl sees
    shown = tools.kubectl("get", "inferencemodels,inferenceendpointconfigs,inferenceendpoints",
                          "-n", OPERATOR_NAMESPACE)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    for name in ("abalone-xgb", "abalone-serverless", "abalone-seed", IMAGE):
        assert name in shown.stdout, shown.stdout

    # a wrong secret or an unknown key: the platform's 403 codes, through boto3
    wrong_keys = ((KEY_ID, "wrong", "InvalidSignatureException"),
                  ("AKIAUNKNOWN", SECRET, "UnrecognizedClientException"))  # fmt: skip
    for key_id, wrong, code in wrong_keys:
        for call, request in (
            (client(tools, "sagemaker", key_id, wrong).list_endpoints, {}),
            (client(tools, "sagemaker-runtime", key_id, wrong).invoke_endpoint,
             {"EndpointName": "Abalone-Seed", "Body": to_csv(rows[:1])}),
        ):  # fmt: skip
            with pytest.raises(ClientError) as caught:
                call(**request)
            assert caught.value.response["Error"]["Code"] == code
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    deleted(sagemaker, "Abalone-Seed", "Abalone-Serverless")

    # async: an S3 input, its output where the answer said
    bucket.put_object(Bucket="platform", Key="async/input/rows.csv", Body=to_csv(rows))
    sagemaker.create_endpoint_config(
        EndpointConfigName="abalone-async",
        ProductionVariants=[{**variant, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://platform/async/output"}},
    )  # fmt: skip
    sagemaker.create_endpoint(EndpointName="abalone-async", EndpointConfigName="abalone-async")
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="abalone-async",
                                                     WaiterConfig=FAST)  # fmt: skip
    accepted = runtime.invoke_endpoint_async(
        EndpointName="abalone-async", InputLocation="s3://platform/async/input/rows.csv",
        ContentType="text/csv", InferenceId=uuid.uuid4().hex[:8])  # fmt: skip
    output = read_when_there(bucket, accepted["OutputLocation"], 180)
    np.testing.assert_allclose(scores(output), expected(abalone_model, rows), rtol=1e-6)
    deleted(sagemaker, "abalone-async", "abalone-async")

    # the transform job: Completed, every output right
    for index in range(2):
        bucket.put_object(Bucket="platform", Key=f"batch/input/part-{index}.csv",
                          Body=to_csv(rows[index * 20 : index * 20 + 20]))  # fmt: skip
    sagemaker.create_transform_job(
        TransformJobName="Abalone-Batch", ModelName="Abalone-XGB", BatchStrategy="MultiRecord",
        TransformInput={"DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://platform/batch/input/"}},
            "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": "s3://platform/batch/output/", "Accept": "text/csv",
                         "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )  # fmt: skip
    sagemaker.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName="Abalone-Batch", WaiterConfig=FAST)  # fmt: skip
    job = sagemaker.describe_transform_job(TransformJobName="Abalone-Batch")
    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    for index in range(2):
        got = bucket.get_object(Bucket="platform", Key=f"batch/output/part-{index}.csv.out")
        part = rows[index * 20 : index * 20 + 20]
        np.testing.assert_allclose(scores(got["Body"].read()), expected(abalone_model, part),
                                   rtol=1e-6)  # fmt: skip
    shown = tools.kubectl("get", "inferenceendpoints", "-n", OPERATOR_NAMESPACE)
    assert "abalone-batch" in shown.stdout, shown.stdout
    sagemaker.delete_model(ModelName="Abalone-XGB")
    assert sagemaker.list_models()["Models"] == []


def test_the_api_takes_no_name_the_gateway_serves_from_another_namespace(
    tools: Tools, k8s_namespace: str, model_uri: str, bucket: Any
) -> None:
    """A serverless endpoint made with kubectl in a namespace the gateway serves: CreateEndpoint
    and CreateTransformJob under its name were accepted, and from then on the gateway answered
    the team's endpoint 409 (a name in two namespaces), for anyone with an access key. Both are
    ResourceInUse naming the namespace; nothing is made, and the team's endpoint stays served."""
    assert tools.apply(serverless_manifest("team-made", model_uri), k8s_namespace).returncode == 0
    sagemaker, runtime = client(tools, "sagemaker"), client(tools, "sagemaker-runtime")

    def route_answer() -> int:
        """The async route's answer for it: 400 (served, of another mode), 404 (not known),
        409 (a name in two namespaces). No replica is started."""
        with pytest.raises(ClientError) as caught:
            runtime.invoke_endpoint_async(EndpointName="team-made",
                                          InputLocation="s3://platform/none.csv")  # fmt: skip
        status: int = caught.value.response["ResponseMetadata"]["HTTPStatusCode"]
        return status

    wait_until(lambda: route_answer() == 400, 60, "the gateway to serve team-made")
    sagemaker.create_model(ModelName="Team-Clash", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "ModelDataUrl": "s3://platform/model/model.tar.gz"})  # fmt: skip
    sagemaker.create_endpoint_config(EndpointConfigName="Team-Clash", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "Team-Clash",
        "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2}}])  # fmt: skip
    try:
        with pytest.raises(ClientError) as endpoint:
            sagemaker.create_endpoint(EndpointName="Team-Made", EndpointConfigName="Team-Clash")
        with pytest.raises(ClientError) as job:
            sagemaker.create_transform_job(
                TransformJobName="team-made", ModelName="Team-Clash",
                TransformInput={"DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix", "S3Uri": "s3://platform/clash/input/"}}},
                TransformOutput={"S3OutputPath": "s3://platform/clash/output/"},
                TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
            )  # fmt: skip
        for caught in (endpoint, job):
            assert caught.value.response["Error"] == {"Code": "ResourceInUse", "Message": (
                "the name team-made is taken by an endpoint this gateway serves from namespace "
                f"{k8s_namespace} (it serves a name from one namespace only)")}  # fmt: skip
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert get_endpoint(tools.cluster.api, OPERATOR_NAMESPACE, "team-made") is None
        assert route_answer() == 400  # still served, not 409
    finally:
        sagemaker.delete_endpoint_config(EndpointConfigName="Team-Clash")
        sagemaker.delete_model(ModelName="Team-Clash")
        tools.kubectl("delete", "ie", "team-made", "-n", k8s_namespace, "--timeout=60s")


def test_an_unknown_transform_job_is_answered_as_the_platform_answers_it(tools: Tools) -> None:
    """DescribeTransformJob and StopTransformJob of a job that does not exist, through boto3
    against the gateway (its Kubernetes store): the platform's ValidationException (its service
    model lists ResourceNotFound, which it does not send; boto3's transform waiter fails on
    this code at its first answer) naming the job as given, a 400, for any name the platform
    takes (a 63-character one is no endpoint's), and nothing made."""
    sagemaker = client(tools, "sagemaker")
    for name in ("No-Such-Job", "j" * 63):
        for call in (sagemaker.describe_transform_job, sagemaker.stop_transform_job):
            with pytest.raises(ClientError) as caught:
                call(TransformJobName=name)
            answer = caught.value.response
            assert answer["Error"] == {
                "Code": "ValidationException",
                "Message": f"Could not find requested job with name {name}",
            }
            assert answer["ResponseMetadata"]["HTTPStatusCode"] == 400
    waiter = sagemaker.get_waiter("transform_job_completed_or_stopped")
    with pytest.raises(WaiterError, match="terminal failure state"):
        waiter.wait(TransformJobName="No-Such-Job")  # its own configuration: a minute a poll
    listed = sagemaker.list_transform_jobs()["TransformJobSummaries"]
    assert not {"no-such-job", "j" * 63} & {job["TransformJobName"].lower() for job in listed}


def test_the_kubernetes_store_keeps_records_and_endpoints_as_objects(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    async def scenario() -> None:
        api = KubeApi(Credentials.from_kubeconfig(tools.cluster.kubeconfig))
        store = KubePlatformStore(api, k8s_namespace)
        model = {"ModelName": "Abalone-Model", "PrimaryContainer": {"Image": "xgboost:1.7-1",
                 "ModelDataUrl": model_uri}, "ModelArn": "arn:x", "CreationTime": 1.5}  # fmt: skip
        await store.create_record(RecordKind.MODEL, "Abalone-Model", model)
        with pytest.raises(AlreadyExists):
            await store.create_record(RecordKind.MODEL, "abalone-model", model)
        assert await store.read_record(RecordKind.MODEL, "ABALONE-model") == model
        assert await store.read_record(RecordKind.ENDPOINT_CONFIG, "abalone-model") is None
        assert await store.list_records(RecordKind.MODEL) == [model]
        assert await store.list_records(RecordKind.ENDPOINT_CONFIG) == []

        endpoint = endpoint_manifest("Abalone-Rt", model_uri)
        endpoint["metadata"]["annotations"] = {"platform.infermodes.dev/name": "Abalone-Rt"}
        await store.create_endpoint(endpoint)
        with pytest.raises(AlreadyExists):
            await store.create_endpoint(endpoint)
        demand = {"metadata": {"annotations": {"infermodes.dev/demand-abc": "{}"}}}
        await api.merge_patch(f"{store.endpoints}/abalone-rt", demand)
        endpoint["spec"]["realtime"]["maxReplicas"] = 2
        endpoint["metadata"]["annotations"] = {"platform.infermodes.dev/name": "Abalone-RT"}
        await store.replace_endpoint(endpoint)
        read = await store.read_endpoint("Abalone-Rt")
        assert read is not None and read["spec"]["realtime"]["maxReplicas"] == 2
        annotations = read["metadata"]["annotations"]
        assert annotations["platform.infermodes.dev/name"] == "Abalone-RT"
        assert annotations["infermodes.dev/demand-abc"] == "{}"  # others' annotations stay
        assert [e["metadata"]["name"] for e in await store.list_endpoints()] == ["abalone-rt"]

        shown = tools.kubectl("get", "inferencemodels,inferenceendpoints", "-n", k8s_namespace)
        assert "abalone-model" in shown.stdout and "xgboost:1.7-1" in shown.stdout, shown
        assert "abalone-rt" in shown.stdout, shown.stdout

        await store.delete_endpoint("abalone-rt")
        await store.delete_record(RecordKind.MODEL, "Abalone-Model")
        with pytest.raises(NotFound):
            await store.delete_record(RecordKind.MODEL, "Abalone-Model")
        with pytest.raises(NotFound):
            await store.replace_endpoint(endpoint_manifest("never-created", model_uri))

        # the cluster's refusals are the caller's to read, not the store's failure (a 500)
        bad = endpoint_manifest("bad-schema", model_uri)
        bad["spec"]["realtime"]["maxReplicas"] = "many"
        with pytest.raises(Refused, match=r"refused to create InferenceEndpoint 'bad-schema': "
                                          r".*maxReplicas"):  # fmt: skip
            await store.create_endpoint(bad)
        quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-models"},
                 "spec": {"hard": {"count/inferencemodels.infermodes.dev": "0"}}}  # fmt: skip
        assert tools.apply(quota, k8s_namespace).returncode == 0
        wait_until(lambda: bool(tools.kubectl("get", "resourcequota", "no-models", "-n",
                   k8s_namespace, "-o", "jsonpath={.status.hard}").stdout), 60,
                   "the quota's status", interval=0.5)  # fmt: skip
        with pytest.raises(LimitExceeded, match="exceeded quota: no-models"):
            await store.create_record(RecordKind.MODEL, "Over-Quota", model)
        await api.client.aclose()

    asyncio.run(scenario())


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
    sagemaker, runtime = (
        counting_client(tools, "sagemaker"),
        counting_client(tools, "sagemaker-runtime"),
    )
    container = {"Image": IMAGE, "ModelDataUrl": "s3://platform/model/model.tar.gz"}
    sagemaker.create_model(ModelName="Hostile-XGB", ExecutionRoleArn=ROLE,
                           PrimaryContainer=container)  # fmt: skip
    sagemaker.create_model(ModelName="Missing-XGB", ExecutionRoleArn=ROLE, PrimaryContainer={
        **container, "ModelDataUrl": "s3://platform/missing/model.tar.gz"})  # fmt: skip
    # the same model at another key: a config of it rolls the pods out (a change of
    # MaxConcurrency alone is the gateway's, and the endpoint is Updating only for a moment)
    bucket.copy_object(Bucket="platform", Key="model-copy/model.tar.gz",
                       CopySource={"Bucket": "platform", "Key": "model/model.tar.gz"})  # fmt: skip
    sagemaker.create_model(ModelName="Copied-XGB", ExecutionRoleArn=ROLE, PrimaryContainer={
        **container, "ModelDataUrl": "s3://platform/model-copy/model.tar.gz"})  # fmt: skip

    def serverless(config: str, model: str, memory: int, concurrency: int) -> None:
        limits = {"MemorySizeInMB": memory, "MaxConcurrency": concurrency}
        variant = {"VariantName": "AllTraffic", "ModelName": model, "ServerlessConfig": limits}
        sagemaker.create_endpoint_config(EndpointConfigName=config, ProductionVariants=[variant])

    serverless("sl-2", "Hostile-XGB", 1024, 2)
    serverless("sl-4", "Copied-XGB", 1024, 4)  # 2048 MB: 1 CPU, past the test node's room
    serverless("sl-missing", "Missing-XGB", 1024, 4)

    sagemaker.create_endpoint(EndpointName="Hostile", EndpointConfigName="sl-2")
    assert describe(sagemaker, "Hostile")["EndpointStatus"] in ("Creating", "InService")
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="Hostile", WaiterConfig=FAST)

    # its model loaded by one replica, which no invocation asked for: gone at once
    def at_zero() -> bool:
        variant = describe(sagemaker, "Hostile")["ProductionVariants"][0]
        assert describe(sagemaker, "Hostile")["EndpointStatus"] == "InService"
        return (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (0, 0)

    wait_until(at_zero, 90, "zero instances", interval=0.5)
    variant = describe(sagemaker, "Hostile")["ProductionVariants"][0]
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
    for model in ("Hostile-XGB", "Missing-XGB", "Copied-XGB"):
        sagemaker.delete_model(ModelName=model)


def test_an_endpoint_being_deleted_is_deleting_and_takes_no_update(
    tools: Tools, bucket: Any
) -> None:
    """DeleteEndpoint of an endpoint that something else still holds (a finalizer of another
    controller, here the test's): until it is gone, Describe and List say Deleting, not the
    phase it had, and UpdateEndpoint is refused, as the platform refuses one of an endpoint it
    is deleting."""
    sagemaker = counting_client(tools, "sagemaker")
    sagemaker.create_model(ModelName="Held-XGB", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "ModelDataUrl": "s3://platform/model/model.tar.gz"})  # fmt: skip
    sagemaker.create_endpoint_config(EndpointConfigName="held", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "Held-XGB",
        "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2}}])  # fmt: skip
    sagemaker.create_endpoint(EndpointName="Held", EndpointConfigName="held")
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="Held", WaiterConfig=FAST)
    api = tools.cluster.api
    edit_finalizers(api, f"{IE}/held", lambda finalizers: [*finalizers, HOLD])
    try:
        sagemaker.delete_endpoint(EndpointName="Held")
        assert describe(sagemaker, "Held")["EndpointStatus"] == "Deleting"
        listed = sagemaker.list_endpoints(NameContains="Held")["Endpoints"]
        assert [e["EndpointStatus"] for e in listed] == ["Deleting"], listed
        with pytest.raises(ClientError) as refused:
            sagemaker.update_endpoint(EndpointName="Held", EndpointConfigName="held")
        assert error_code(refused.value) == "ValidationException"
    finally:
        edit_finalizers(api, f"{IE}/held", lambda finalizers: [f for f in finalizers if f != HOLD])
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName="Held", WaiterConfig=FAST)
    sagemaker.delete_endpoint_config(EndpointConfigName="held")
    sagemaker.delete_model(ModelName="Held-XGB")


def test_a_key_added_to_the_secret_is_taken_and_one_removed_is_refused_without_a_restart(
    tools: Tools,
) -> None:
    """The chart mounts gateway.auth.secretRef as a file the gateway follows: edit the
    Secret, and a new key works and a removed one is refused once the kubelet has rewritten
    the file, by the same gateway pod. (Last in the module: it changes the keys.)"""
    api = tools.cluster.api
    pods = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods"
    selector = "app.kubernetes.io/component=gateway"
    before = {p["metadata"]["uid"] for p in api.get(pods, labelSelector=selector)["items"]}

    def answer(key_id: str, secret_key: str) -> str:
        try:
            client(tools, "sagemaker", key_id, secret_key).list_endpoints()
        except ClientError as exc:
            return error_code(exc)
        return "served"

    assert answer("AKIAOTHER", "other") == "served"
    keys = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/platform-keys"
    rotated = f"{KEY_ID}:{SECRET}\nAKIAROTATED:rotated/secret"
    api.merge_patch(keys, {"stringData": {"accessKeys": rotated}})
    wait_until(lambda: answer("AKIAROTATED", "rotated/secret") == "served", 60,
               "the added key to be taken")  # fmt: skip
    assert answer("AKIAOTHER", "other") == "UnrecognizedClientException"
    assert answer(KEY_ID, SECRET) == "served"
    after = api.get(pods, labelSelector=selector)["items"]
    assert {p["metadata"]["uid"] for p in after} == before
    assert all(s["restartCount"] == 0 for p in after for s in p["status"]["containerStatuses"])
