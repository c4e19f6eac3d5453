"""The managed platform's API on the test control plane, through boto3's real ``sagemaker`` and
``sagemaker-runtime`` clients pointed at the gateway of the installed chart and signed with a key
from its Secret: the seed flow on a serverless endpoint, an async endpoint writing to S3
(SeaweedFS) over RabbitMQ, a transform job, all as objects kubectl sees; a wrong key is refused
with the platform's 403 codes. And the Kubernetes store on its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from infermodes.gateway.kube import Credentials, KubeApi
from infermodes.gateway.platform_store import KubePlatformStore
from infermodes.platform.store import AlreadyExists, LimitExceeded, NotFound, RecordKind, Refused
from tests.cluster.harness import Cluster
from tests.conftest import AbaloneModel
from tests.e2e.operator_support import (
    OPERATOR_NAMESPACE,
    Tools,
    endpoint_manifest,
    gateway_url,
    installed_chart,
    to_csv,
)
from tests.support.processes import wait_until
from tests.support.rabbitmq import Broker, rabbitmq_broker
from tests.support.s3 import S3Endpoint, read_when_there
from tests.support.seaweedfs import seaweedfs_server

KEY_ID, SECRET = "AKIAE2EPLATFORM", "e2e/platform+secret="
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::123456789012:role/infermodes-e2e"
FAST = {"Delay": 1, "MaxAttempts": 180}  # boto3's waiters, polled every second


@pytest.fixture(scope="module")
def store() -> Iterator[S3Endpoint]:
    with seaweedfs_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with rabbitmq_broker() as running:
        yield running


def secret(cluster: Cluster, name: str, data: dict[str, str]) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}
    cluster.api.post(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets", body)


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
