"""boto3's own ``sagemaker`` and ``sagemaker-runtime`` clients, unchanged but for
``endpoint_url``, against a real ``infermodes up`` process and a real S3 server (SeaweedFS): the
seed flow (model.tar.gz in S3, a serverless endpoint, boto3's waiters, predictions equal to the
booster's, clean-up), an async endpoint, a transform job, and every operation's errors as the
``ClientError`` codes boto3 raises."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from botocore.exceptions import ClientError, WaiterError

from infermodes.local.access import ACCESS_KEY_ID, read_token
from tests.conftest import AbaloneModel
from tests.support.async_plane import WebhookReceiver, to_csv
from tests.support.local import Up, running_up
from tests.support.processes import wait_until
from tests.support.s3 import S3Endpoint, read_when_there
from tests.support.seaweedfs import seaweedfs_server

REGION = "us-east-1"
XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::123456789012:role/infermodes-test"
FAST = {"Delay": 1, "MaxAttempts": 120}  # the waiters' own acceptors, polled every second
MODEL_URL = "s3://models/abalone/model.tar.gz"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    """SeaweedFS: a real S3 server process (its own, on loopback ports)."""
    with seaweedfs_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def up(s3: S3Endpoint, abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Up]:  # fmt: skip
    """``up`` with no manifest: everything comes through the platform's API; its children
    reach the S3 server through the standard AWS variables."""
    folder = tmp_path_factory.mktemp("platform")
    storage: Any = s3.client()
    for bucket in ("models", "async", "batch"):
        storage.create_bucket(Bucket=bucket)
    storage.upload_file(str(abalone_model.tarball), "models", "abalone/model.tar.gz")
    with (
        mock.patch.dict("os.environ", s3.env),
        running_up(folder / "state", [], folder / "up.log") as process,
    ):
        yield process


def client(up: Up, service: str, **config: Any) -> Any:
    """boto3's client of ``service``; ``config``: botocore ``Config`` options."""
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=up.url, region_name=REGION,
                        aws_access_key_id=ACCESS_KEY_ID,
                        aws_secret_access_key=read_token(up.token_file),
                        config=Config(**config))  # fmt: skip


@pytest.fixture(scope="module")
def sagemaker(up: Up) -> Any:
    return client(up, "sagemaker")


@pytest.fixture(scope="module")
def runtime(up: Up) -> Any:
    return client(up, "sagemaker-runtime")


def error_of(call: Any, **request: Any) -> tuple[str, str]:
    """The code and message of the ``ClientError`` boto3 raises."""
    with pytest.raises(ClientError) as caught:
        call(**request)
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


def code_of(call: Any, **request: Any) -> str:
    return error_of(call, **request)[0]


def scores(text: str) -> np.ndarray:
    return np.array(text.replace(",", "\n").split(), dtype=np.float32)


def expected(abalone_model: AbaloneModel, rows: np.ndarray) -> np.ndarray:
    found: np.ndarray = abalone_model.booster().inplace_predict(rows)  # type: ignore[attr-defined]
    return found


def create_model(sagemaker: Any, name: str) -> None:
    container = {"Image": XGBOOST_IMAGE, "ModelDataUrl": MODEL_URL}
    sagemaker.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)


def create_instance_config(sagemaker: Any, name: str, model: str, **fields: Any) -> None:
    """An endpoint config of one instance-backed variant, plus any other ``fields``."""
    variant = {"VariantName": "AllTraffic", "ModelName": model,
               "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}  # fmt: skip
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant],
                                     **fields)  # fmt: skip


def test_the_seed_flow_with_a_serverless_endpoint(
    sagemaker: Any, runtime: Any, abalone_model: AbaloneModel
) -> None:
    create_model(sagemaker, "abalone-xgb")
    config_arn = sagemaker.create_endpoint_config(
        EndpointConfigName="abalone-serverless",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "abalone-xgb",
                             "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}],
    )["EndpointConfigArn"]  # fmt: skip
    assert config_arn.endswith(":endpoint-config/abalone-serverless")
    created = sagemaker.create_endpoint(EndpointName="Abalone-Seed",  # a platform name
                                        EndpointConfigName="abalone-serverless")  # fmt: skip
    assert created["EndpointArn"] == (
        "arn:aws:sagemaker:us-east-1:000000000000:endpoint/abalone-seed")  # fmt: skip
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="Abalone-Seed",
                                                     WaiterConfig=FAST)  # fmt: skip
    described = sagemaker.describe_endpoint(EndpointName="Abalone-Seed")
    assert (described["EndpointName"], described["EndpointStatus"]) == ("Abalone-Seed", "InService")
    variant = described["ProductionVariants"][0]
    assert variant["CurrentServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert variant["DeployedImages"][0]["SpecifiedImage"] == XGBOOST_IMAGE
    assert described["CreationTime"] <= described["LastModifiedTime"]

    rows = abalone_model.test_rows[:20]
    answer = runtime.invoke_endpoint(EndpointName="Abalone-Seed", ContentType="text/csv",
                                     Accept="text/csv", Body=to_csv(rows))  # fmt: skip
    predictions = scores(answer["Body"].read().decode())
    np.testing.assert_allclose(predictions, expected(abalone_model, rows), rtol=1e-6)

    assert "abalone-xgb" in [m["ModelName"] for m in sagemaker.list_models()["Models"]]
    configs = sagemaker.list_endpoint_configs(NameContains="serverless")["EndpointConfigs"]
    assert [c["EndpointConfigName"] for c in configs] == ["abalone-serverless"]
    listed = sagemaker.list_endpoints(StatusEquals="InService")["Endpoints"]
    assert "Abalone-Seed" in [e["EndpointName"] for e in listed]
    model = sagemaker.describe_model(ModelName="abalone-xgb")
    assert model["PrimaryContainer"]["ModelDataUrl"] == MODEL_URL
    config = sagemaker.describe_endpoint_config(EndpointConfigName="abalone-serverless")
    assert config["ProductionVariants"][0]["ServerlessConfig"]["MaxConcurrency"] == 5

    # UpdateEndpoint: another config, Updating -> InService, served by the new spec
    create_instance_config(sagemaker, "abalone-realtime", "abalone-xgb")
    sagemaker.update_endpoint(EndpointName="Abalone-Seed", EndpointConfigName="abalone-realtime")
    assert sagemaker.describe_endpoint(EndpointName="Abalone-Seed")["EndpointStatus"] in (
        "Updating", "InService")  # fmt: skip
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="Abalone-Seed",
                                                     WaiterConfig=FAST)  # fmt: skip
    updated = sagemaker.describe_endpoint(EndpointName="Abalone-Seed")
    assert updated["EndpointConfigName"] == "abalone-realtime"
    assert updated["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    answer = runtime.invoke_endpoint(EndpointName="Abalone-Seed", ContentType="text/csv",
                                     Body=to_csv(rows))  # fmt: skip
    np.testing.assert_allclose(scores(answer["Body"].read().decode()),
                               expected(abalone_model, rows), rtol=1e-6)  # fmt: skip
    # another model of a multi-model endpoint: refused, not answered by this one's model
    assert code_of(runtime.invoke_endpoint, EndpointName="Abalone-Seed", ContentType="text/csv",
                   TargetModel="other.tar.gz", Body=to_csv(rows)) == "ValidationError"  # fmt: skip
    # a variant the endpoint does not have: refused as the platform does (it was served); its
    # own is served
    refused = "TargetVariant 'Canary' is not a variant of endpoint abalone-seed .its one variant"
    with pytest.raises(ClientError, match=refused + " is 'AllTraffic'"):
        runtime.invoke_endpoint(EndpointName="Abalone-Seed", ContentType="text/csv",
                                TargetVariant="Canary", Body=to_csv(rows))  # fmt: skip
    answer = runtime.invoke_endpoint(EndpointName="Abalone-Seed", ContentType="text/csv",
                                     TargetVariant="AllTraffic", Body=to_csv(rows))  # fmt: skip
    np.testing.assert_allclose(scores(answer["Body"].read().decode()),
                               expected(abalone_model, rows), rtol=1e-6)  # fmt: skip
    # a streamed answer: refused in a code boto3 models (it was a 404 "no route")
    with pytest.raises(ClientError) as streamed:
        runtime.invoke_endpoint_with_response_stream(
            EndpointName="Abalone-Seed", ContentType="text/csv", Body=to_csv(rows)
        )
    assert streamed.value.response["Error"]["Code"] == "ValidationError"
    assert "InvokeEndpointWithResponseStream is not supported" in str(streamed.value)

    sagemaker.delete_endpoint(EndpointName="Abalone-Seed")
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName="Abalone-Seed", WaiterConfig=FAST)
    for name in ("abalone-serverless", "abalone-realtime"):
        sagemaker.delete_endpoint_config(EndpointConfigName=name)
    sagemaker.delete_model(ModelName="abalone-xgb")
    assert code_of(sagemaker.describe_endpoint, EndpointName="Abalone-Seed") == (
        "ValidationException")  # fmt: skip
    assert code_of(sagemaker.describe_model, ModelName="abalone-xgb") == "ValidationException"
    assert code_of(runtime.invoke_endpoint, EndpointName="Abalone-Seed", ContentType="text/csv",
                   Body=b"1,2") == "ValidationError"  # fmt: skip


def test_an_async_endpoint_writes_its_output_to_s3(
    sagemaker: Any, runtime: Any, s3: S3Endpoint, abalone_model: AbaloneModel
) -> None:
    create_model(sagemaker, "abalone-async-model")
    create_instance_config(
        sagemaker, "abalone-async-config", "abalone-async-model",
        AsyncInferenceConfig={
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
            "OutputConfig": {"S3OutputPath": "s3://async/output",
                             "S3FailurePath": "s3://async/failures"},
        },
    )  # fmt: skip
    sagemaker.create_endpoint(EndpointName="abalone-async",
                              EndpointConfigName="abalone-async-config")  # fmt: skip
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="abalone-async",
                                                     WaiterConfig=FAST)  # fmt: skip
    described = sagemaker.describe_endpoint(EndpointName="abalone-async")
    assert described["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == "s3://async/output"

    storage: Any = s3.client()
    rows = abalone_model.test_rows[:30]
    storage.put_object(Bucket="async", Key="input/rows.csv", Body=to_csv(rows))
    accepted = runtime.invoke_endpoint_async(EndpointName="abalone-async",
                                             InputLocation="s3://async/input/rows.csv",
                                             ContentType="text/csv",
                                             InferenceId=uuid.uuid4().hex[:8])  # fmt: skip
    assert accepted["OutputLocation"].startswith("s3://async/output/")
    assert uuid.UUID(accepted["ResponseMetadata"]["RequestId"])  # what a ticket quotes
    output = read_when_there(storage, accepted["OutputLocation"])
    np.testing.assert_allclose(scores(output.decode()), expected(abalone_model, rows), rtol=1e-6)
    # boto3 sends ContentType and Accept as X-Amzn-SageMaker-* headers: JSON in, JSON out
    storage.put_object(Bucket="async", Key="input/rows.json",
                       Body=json.dumps({"instances": rows.tolist()}))  # fmt: skip
    accepted = runtime.invoke_endpoint_async(EndpointName="abalone-async",
                                             InputLocation="s3://async/input/rows.json",
                                             ContentType="application/json",
                                             Accept="application/json")  # fmt: skip
    output = read_when_there(storage, accepted["OutputLocation"])
    found = [p["score"] for p in json.loads(output)["predictions"]]
    np.testing.assert_allclose(found, expected(abalone_model, rows), rtol=1e-6)
    with pytest.raises(ClientError, match="S3OutputPathExtension is not supported") as refused:
        runtime.invoke_endpoint_async(EndpointName="abalone-async", S3OutputPathExtension="x",
                                      InputLocation="s3://async/input/rows.json")  # fmt: skip
    assert uuid.UUID(refused.value.response["ResponseMetadata"]["RequestId"])

    sagemaker.delete_endpoint(EndpointName="abalone-async")
    sagemaker.delete_endpoint_config(EndpointConfigName="abalone-async-config")
    sagemaker.delete_model(ModelName="abalone-async-model")


def test_an_async_endpoint_whose_storage_cannot_hold_files_answers_a_4xx_naming_it(
    sagemaker: Any, up: Up, tmp_path: Path
) -> None:
    """An S3OutputPath the file system makes no folder under (/proc: ENOENT) answered every
    request 503 "retry later", which boto3 retries for ever; one under a regular file
    (ENOTDIR) a 500, which it retries too. Both are a 424 naming the location, not retried
    (the file in the way is found before anything is written, and named).
    An S3FailurePath under a regular file was accepted, its error objects lost: a 424 naming
    the field too."""
    import httpx

    create_model(sagemaker, "unusable-model")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    usable = f"file://{tmp_path}/out"
    for name, output, failure, why in (
        ("in-proc", f"file:///proc/infermodes-{uuid.uuid4().hex[:8]}", None,
         "the file system makes no folder there"),
        ("under-a-file", f"file://{blocker}/out", None, f"{blocker} is a file, not a folder"),
        ("failing-under-a-file", usable, f"file://{blocker}/fail",
         f"S3FailurePath; failurePath in a manifest) file://{blocker}/fail cannot hold"),
    ):  # fmt: skip
        config = {"S3OutputPath": output, **({"S3FailurePath": failure} if failure else {})}
        create_instance_config(sagemaker, name, "unusable-model", AsyncInferenceConfig={
            "OutputConfig": config})  # fmt: skip
        sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)
        sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST)
        answer = httpx.post(f"{up.url}/endpoints/{name}/async-invocations", content=b"1,2\n",
                            headers={"Content-Type": "text/csv"}, timeout=30.0)  # fmt: skip
        assert answer.status_code == 424, answer.text
        assert answer.headers["x-amzn-errortype"] == "ValidationError"
        assert why in answer.json()["message"] and (failure or output) in answer.json()["message"]
        sagemaker.delete_endpoint(EndpointName=name)
        sagemaker.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=FAST)
        sagemaker.delete_endpoint_config(EndpointConfigName=name)
    sagemaker.delete_model(ModelName="unusable-model")


def test_a_webhook_port_above_65535_is_refused_by_the_api_and_by_apply_naming_it(
    sagemaker: Any, up: Up, tmp_path: Path
) -> None:
    """http://127.0.0.1:99999/x was taken, and POSTed to port 34463 (99999 modulo 65536)."""
    import subprocess

    import yaml

    from tests.support.processes import INFERMODES

    create_model(sagemaker, "port-model")
    for topic in ("SuccessTopic", "ErrorTopic"):
        notify = {topic: "http://127.0.0.1:99999/x?token=T0K3N"}
        code, message = error_of(
            create_instance_config, sagemaker=sagemaker, name="port", model="port-model",
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://async/port",
                                                   "NotificationConfig": notify}})  # fmt: skip
        assert code == "ValidationException", message
        assert (f"AsyncInferenceConfig.OutputConfig.NotificationConfig.{topic}: its port 99999 "
                "is not one of 1 to 65535") in message, message  # fmt: skip
        assert "T0K3N" not in message
    manifest = tmp_path / "port.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "infermodes.dev/v1alpha1", "kind": "InferenceEndpoint",
        "metadata": {"name": "port"},
        "spec": {"mode": "async", "model": {"uri": MODEL_URL},
                 "async": {"outputPath": "s3://async/port", "notification": {
                     "errorWebhook": "http://127.0.0.1:0/x?token=T0K3N"}}}}))  # fmt: skip
    refused = subprocess.run([INFERMODES, "apply", "-f", str(manifest)], capture_output=True,
                             text=True, timeout=120, env=up.cli_env)  # fmt: skip
    assert refused.returncode == 1, refused
    assert ("spec.async.notification.errorWebhook: its port 0 is not one of 1 to 65535"
            in refused.stderr), refused.stderr  # fmt: skip
    assert "T0K3N" not in refused.stderr
    assert [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]].count("port") == 0
    sagemaker.delete_model(ModelName="port-model")


def test_a_notification_topic_is_an_sns_arn_or_a_webhook_in_any_case_of_its_scheme(
    sagemaker: Any, runtime: Any, s3: S3Endpoint, abalone_model: AbaloneModel
) -> None:
    """HTTP://... was kept as an SNS topic and nothing was POSTed (a spec's field takes it as
    the webhook); ftp://..., any text, "" were kept as SNS topics, announced nowhere and echoed
    by DescribeEndpoint as if configured."""
    create_model(sagemaker, "topic-model")
    where = "AsyncInferenceConfig.OutputConfig.NotificationConfig."
    for topic in ("ftp://127.0.0.1/x", "not a topic", "", " http://127.0.0.1:9/lead",
                  "arn:aws:sns:us-east-1:123456789012:t\nx"):  # fmt: skip
        code, message = error_of(
            create_instance_config, sagemaker=sagemaker, name="topic", model="topic-model",
            AsyncInferenceConfig={"OutputConfig": {
                "S3OutputPath": "s3://async/topic", "NotificationConfig": {"ErrorTopic": topic}
            }})  # fmt: skip
        assert code == "ValidationException", message
        assert message.startswith(f"{where}ErrorTopic: must be an SNS topic ARN"), message
    configs = sagemaker.list_endpoint_configs()["EndpointConfigs"]
    assert "topic" not in [config["EndpointConfigName"] for config in configs]
    with WebhookReceiver() as hook:
        upper = hook.url.replace("http://", "HTTP://")
        notify = {"SuccessTopic": upper, "ErrorTopic": "arn:aws:sns:us-east-1:123456789012:err"}
        create_instance_config(sagemaker, "topic", "topic-model", AsyncInferenceConfig={
            "OutputConfig": {"S3OutputPath": "s3://async/topic",
                             "NotificationConfig": notify}})  # fmt: skip
        sagemaker.create_endpoint(EndpointName="topic", EndpointConfigName="topic")
        sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="topic", WaiterConfig=FAST)
        described = sagemaker.describe_endpoint(EndpointName="topic")
        assert described["AsyncInferenceConfig"]["OutputConfig"]["NotificationConfig"] == notify
        s3.client().put_object(Bucket="async", Key="input/topic.csv",
                               Body=to_csv(abalone_model.test_rows[:1]))  # fmt: skip
        accepted = runtime.invoke_endpoint_async(
            EndpointName="topic", InputLocation="s3://async/input/topic.csv"
        )
        inference = accepted["InferenceId"]
        wait_until(lambda: inference in hook.ids(), 120, "the HTTP:// webhook POSTed")
    sagemaker.delete_endpoint(EndpointName="topic")
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName="topic", WaiterConfig=FAST)
    sagemaker.delete_endpoint_config(EndpointConfigName="topic")
    sagemaker.delete_model(ModelName="topic-model")


def transform_request(name: str, model: str, prefix: str) -> dict[str, Any]:
    return {
        "TransformJobName": name,
        "ModelName": model,
        "MaxConcurrentTransforms": 2,
        "MaxPayloadInMB": 1,
        "BatchStrategy": "MultiRecord",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                            "S3Uri": f"s3://batch/{prefix}/input/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": f"s3://batch/{prefix}/output/",
                            "Accept": "text/csv", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 2},
    }  # fmt: skip


def test_a_transform_job_completes_with_every_output(
    sagemaker: Any, s3: S3Endpoint, abalone_model: AbaloneModel, up: Up
) -> None:

    storage: Any = s3.client()
    rows = abalone_model.test_rows
    for index in range(3):
        part = rows[index * 40 : index * 40 + 40]
        storage.put_object(Bucket="batch", Key=f"job/input/part-{index}.csv", Body=to_csv(part))
    create_model(sagemaker, "abalone-batch-model")
    request = transform_request("Abalone-Batch", "abalone-batch-model", "job")
    arn = sagemaker.create_transform_job(**request)["TransformJobArn"]
    assert arn.endswith(":transform-job/abalone-batch")
    sagemaker.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName="Abalone-Batch", WaiterConfig=FAST
    )
    described = sagemaker.describe_transform_job(TransformJobName="abalone-batch")
    assert described["TransformJobName"] == "Abalone-Batch"
    assert described["TransformJobStatus"] == "Completed"
    assert described["TransformResources"]["InstanceCount"] == 2
    assert described["TransformEndTime"] >= described["CreationTime"]
    time.sleep(1.1)  # the end time is when the job ended, not when it was asked for
    again = sagemaker.describe_transform_job(TransformJobName="abalone-batch")
    assert again["TransformEndTime"] == described["TransformEndTime"]
    shown = up.status("abalone-batch")
    assert (shown["phase"], shown["desiredReplicas"]) == ("Completed", 0)  # wants no process
    for index in range(3):
        output = storage.get_object(Bucket="batch", Key=f"job/output/part-{index}.csv.out")
        part = rows[index * 40 : index * 40 + 40]
        np.testing.assert_allclose(scores(output["Body"].read().decode()),
                                   expected(abalone_model, part), rtol=1e-6)  # fmt: skip
    summaries = sagemaker.list_transform_jobs(StatusEquals="Completed")["TransformJobSummaries"]
    assert "Abalone-Batch" in [s["TransformJobName"] for s in summaries]
    assert error_of(sagemaker.stop_transform_job, TransformJobName="abalone-batch") == (
        "ValidationException", "The request was rejected because the transform job "
        "Abalone-Batch is in status Completed.")  # fmt: skip
    assert code_of(sagemaker.create_transform_job, **request) == "ResourceInUse"


def test_a_stopped_transform_job_reports_stopped(sagemaker: Any, s3: S3Endpoint,
                                                 big_input: Path) -> None:  # fmt: skip
    storage: Any = s3.client()
    storage.upload_file(str(big_input), "batch", "big/input/big.csv")
    create_model(sagemaker, "abalone-stop-model")
    sagemaker.create_transform_job(**transform_request("abalone-stop", "abalone-stop-model", "big"))
    sagemaker.stop_transform_job(TransformJobName="abalone-stop")
    assert sagemaker.describe_transform_job(TransformJobName="abalone-stop")[
        "TransformJobStatus"] in ("Stopping", "Stopped")  # fmt: skip
    sagemaker.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName="abalone-stop", WaiterConfig=FAST
    )
    assert sagemaker.describe_transform_job(TransformJobName="abalone-stop")[
        "TransformJobStatus"] == "Stopped"  # fmt: skip
    # ended: a stop is refused, as the platform refuses one of a job that is not running
    assert error_of(sagemaker.stop_transform_job, TransformJobName="abalone-stop") == (
        "ValidationException", "The request was rejected because the transform job "
        "abalone-stop is in status Stopped.")  # fmt: skip


def test_a_job_after_a_stopped_one_of_the_same_output_path_runs(
    sagemaker: Any, s3: S3Endpoint, abalone_model: AbaloneModel, big_input: Path
) -> None:
    """StopTransformJob is final, as on the platform (the API never resumes a job): the job
    created next, on the same S3OutputPath, runs at once, not InProgress for as long as the
    stopped one is kept (it waited on it as on a job that may resume, OutputInUse)."""
    storage: Any = s3.client()
    storage.upload_file(str(big_input), "batch", "again/big/big.csv")
    rows = abalone_model.test_rows[:20]
    storage.put_object(Bucket="batch", Key="again/small/part.csv", Body=to_csv(rows))
    create_model(sagemaker, "abalone-again-model")
    first = transform_request("abalone-first", "abalone-again-model", "again")
    first["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] = "s3://batch/again/big/"
    sagemaker.create_transform_job(**first)
    sagemaker.stop_transform_job(TransformJobName="abalone-first")
    sagemaker.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName="abalone-first", WaiterConfig=FAST
    )
    assert sagemaker.describe_transform_job(TransformJobName="abalone-first")[
        "TransformJobStatus"] == "Stopped"  # fmt: skip
    second = transform_request("abalone-second", "abalone-again-model", "again")
    second["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] = "s3://batch/again/small/"
    sagemaker.create_transform_job(**second)
    sagemaker.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName="abalone-second", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    described = sagemaker.describe_transform_job(TransformJobName="abalone-second")
    assert described["TransformJobStatus"] == "Completed"
    output = storage.get_object(Bucket="batch", Key="again/output/part.csv.out")["Body"].read()
    np.testing.assert_allclose(scores(output.decode()), expected(abalone_model, rows), rtol=1e-6)


def test_a_transform_job_whose_output_path_has_a_dot_segment_is_refused_naming_it(
    sagemaker: Any, s3: S3Endpoint
) -> None:
    """S3OutputPath s3://batch/dots/zz/../output/ was taken: S3 keeps the key as written, so
    the output hold, comparing strings, let it write beside a job writing
    s3://batch/dots/output/ (and file:///in/z/../ wrote among its own inputs)."""
    create_model(sagemaker, "abalone-dots-model")
    request = transform_request("abalone-dots", "abalone-dots-model", "dots")
    request["TransformOutput"]["S3OutputPath"] = "s3://batch/dots/zz/../output/"
    assert error_of(sagemaker.create_transform_job, **request) == (
        "ValidationException", "TransformOutput.S3OutputPath: 's3://batch/dots/zz/../output/' "
        "has a '..' segment, which gives the location a second spelling (a file path resolves "
        "it; S3 keeps it as written): give it without '.' or '..' segments")  # fmt: skip
    nothing_made = code_of(sagemaker.describe_transform_job, TransformJobName="abalone-dots")
    assert nothing_made == "ValidationException"


def test_a_job_without_assemble_with_concatenates_its_outputs_as_the_platform(
    sagemaker: Any, s3: S3Endpoint, abalone_model: AbaloneModel
) -> None:
    """AssembleWith left out is the platform's None: each mini-batch's JSON answer follows
    the last as it is, with no newline between (Line would add one)."""
    storage: Any = s3.client()
    rows = abalone_model.test_rows[:3]
    storage.put_object(Bucket="batch", Key="assemble/input/part.csv", Body=to_csv(rows))
    create_model(sagemaker, "abalone-assemble-model")
    request = transform_request("abalone-assemble", "abalone-assemble-model", "assemble")
    request["BatchStrategy"] = "SingleRecord"  # a mini-batch, and an answer, per row
    request["TransformOutput"] = {"S3OutputPath": "s3://batch/assemble/output/",
                                  "Accept": "application/json"}  # fmt: skip
    sagemaker.create_transform_job(**request)
    sagemaker.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName="abalone-assemble", WaiterConfig=FAST
    )
    output = storage.get_object(Bucket="batch", Key="assemble/output/part.csv.out")
    text = output["Body"].read().decode()
    assert "\n" not in text
    found, at = [], 0
    while at < len(text):  # the answers, one after the other
        answer, at = json.JSONDecoder().raw_decode(text, at)
        found += [prediction["score"] for prediction in answer["predictions"]]
    assert len(found) == len(rows)
    np.testing.assert_allclose(found, expected(abalone_model, rows), rtol=1e-6)


def test_a_content_type_and_an_accept_with_a_charset_are_taken_and_described_as_given(
    sagemaker: Any, s3: S3Endpoint, abalone_model: AbaloneModel
) -> None:
    """``text/csv; charset=utf-8`` is CSV, as the model server reads that Content-Type; a
    charset the instances cannot read is a 400 naming the field, not a job that fails."""
    storage: Any = s3.client()
    rows = abalone_model.test_rows[:10]
    storage.put_object(Bucket="batch", Key="charset/input/part.csv", Body=to_csv(rows))
    create_model(sagemaker, "abalone-charset-model")
    refused = transform_request("abalone-latin", "abalone-charset-model", "charset")
    refused["TransformInput"]["ContentType"] = "text/csv; charset=latin-1"
    with pytest.raises(ClientError, match=r"TransformInput\.ContentType.*charset") as caught:
        sagemaker.create_transform_job(**refused)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    request = transform_request("abalone-charset", "abalone-charset-model", "charset")
    request["TransformInput"]["ContentType"] = "text/csv; charset=utf-8"
    request["TransformOutput"]["Accept"] = "text/csv; charset=utf-8"  # the Accept header's too
    sagemaker.create_transform_job(**request)
    sagemaker.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName="abalone-charset", WaiterConfig=FAST
    )
    described = sagemaker.describe_transform_job(TransformJobName="abalone-charset")
    assert described["TransformJobStatus"] == "Completed"
    assert described["TransformInput"]["ContentType"] == "text/csv; charset=utf-8"
    assert described["TransformOutput"]["Accept"] == "text/csv; charset=utf-8"
    output = storage.get_object(Bucket="batch", Key="charset/output/part.csv.out")["Body"].read()
    np.testing.assert_allclose(scores(output.decode()), expected(abalone_model, rows), rtol=1e-6)


def test_the_transform_waiter_on_an_unknown_job_fails_at_its_first_answer(sagemaker: Any) -> None:
    """The waiter's own configuration (a minute between polls): it ends on the first answer,
    the platform's ValidationException for a job that does not exist, naming the job."""
    waiter = sagemaker.get_waiter("transform_job_completed_or_stopped")
    with pytest.raises(WaiterError, match="terminal failure state") as caught:
        waiter.wait(TransformJobName="no-such-job")
    error = caught.value.last_response["Error"]
    assert error == {"Code": "ValidationException",
                     "Message": "Could not find requested job with name no-such-job"}  # fmt: skip


def created_failing(sagemaker: Any, name: str, missing: str) -> None:
    """Endpoint ``name`` (its model ``<name>-model``, its config ``<name>-config``) of a model
    at ``missing``, which cannot load: boto3's waiter stops on Failed."""
    sagemaker.create_model(ModelName=f"{name}-model", PrimaryContainer={"ModelDataUrl": missing})
    create_instance_config(sagemaker, f"{name}-config", f"{name}-model")
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    with pytest.raises(WaiterError, match="Failed"):
        sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST)


def test_a_model_that_cannot_be_loaded_fails_the_endpoint_with_the_reason(sagemaker: Any) -> None:
    """boto3's waiter stops on Failed; FailureReason is the model server's own reason."""
    created_failing(sagemaker, "absent", "s3://models/absent/model.tar.gz")
    described = sagemaker.describe_endpoint(EndpointName="absent")
    assert described["EndpointStatus"] == "Failed"
    assert described["FailureReason"].startswith("ModelLoadFailed: model cannot be loaded: ")
    assert "absent/model.tar.gz" in described["FailureReason"]
    sagemaker.delete_endpoint(EndpointName="absent")
    sagemaker.delete_endpoint_config(EndpointConfigName="absent-config")
    sagemaker.delete_model(ModelName="absent-model")


def test_a_failed_endpoints_last_modified_time_stays_through_its_models_retries(
    sagemaker: Any, up: Up
) -> None:
    """Each retry of a model that cannot load (5 s after the failure, then doubling) moved
    LastModifiedTime, the endpoint Failed for the same reason throughout. It stays the time
    the endpoint turned Failed, through a retry seen running and failing again."""
    created_failing(sagemaker, "failing", "s3://models/absent-again/model.tar.gz")
    failed_at = sagemaker.describe_endpoint(EndpointName="failing")["LastModifiedTime"]
    seen, retry_ran = set(), False
    for _ in range(48):  # about 12 s: the first retry comes 5 s after the failure
        described = sagemaker.describe_endpoint(EndpointName="failing")
        seen.add((described["EndpointStatus"], described["LastModifiedTime"]))
        retry_ran |= any(p["running"] for p in up.status("failing")["processes"])
        time.sleep(0.25)
    assert retry_ran, "no retry of the model ran while polled"
    assert seen == {("Failed", failed_at)}
    sagemaker.delete_endpoint(EndpointName="failing")
    sagemaker.delete_endpoint_config(EndpointConfigName="failing-config")
    sagemaker.delete_model(ModelName="failing-model")


def symlinked_member() -> bytes:
    """A model.tar.gz whose ``xgboost-model`` is a symbolic link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("xgboost-model")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return buffer.getvalue()


def readme_only() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        readme = tarfile.TarInfo("readme.txt")
        readme.size = 6
        tar.addfile(readme, io.BytesIO(b"hello\n"))
    return buffer.getvalue()


def test_an_artifact_read_by_a_guess_or_refused_as_a_link_is_named_in_the_failure_reason(
    sagemaker: Any, s3: S3Endpoint
) -> None:
    """FailureReason said "legacy binary model is truncated" of a tar of a readme and of a
    text file named .tar.gz, and "found: none" of a tar whose xgboost-model is a link."""
    artifacts = {
        "readme": (readme_only(), "model.tar.gz holds no 'xgboost-model'; its one file, "
                   "'readme.txt', was read as the model: "),
        "notar": (b"hello world", "s3://models/notar/model.tar.gz is named as a .tar.gz but is "
                  "not a gzip archive (it does not start with 1f 8b), so it was read as a bare "
                  "model: "),
        "link": (symlinked_member(), "model.tar.gz's member 'xgboost-model' is a symbolic link "
                 "(to '/etc/passwd'), which is no regular file in the archive"),
    }  # fmt: skip
    storage: Any = s3.client()
    for name, (body, _) in artifacts.items():
        storage.put_object(Bucket="models", Key=f"{name}/model.tar.gz", Body=body)
        sagemaker.create_model(ModelName=f"{name}-model", PrimaryContainer={
            "ModelDataUrl": f"s3://models/{name}/model.tar.gz"})  # fmt: skip
        create_instance_config(sagemaker, f"{name}-config", f"{name}-model")
        sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    for name, (_, said) in artifacts.items():
        with pytest.raises(WaiterError, match="Failed"):
            sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=name,
                                                             WaiterConfig=FAST)  # fmt: skip
        reason = sagemaker.describe_endpoint(EndpointName=name)["FailureReason"]
        assert said in reason, (name, reason)
        sagemaker.delete_endpoint(EndpointName=name)
        sagemaker.delete_endpoint_config(EndpointConfigName=f"{name}-config")
        sagemaker.delete_model(ModelName=f"{name}-model")


def updated_to_a_missing_model(sagemaker: Any, name: str) -> None:
    """Endpoint ``name`` in service on config ``<name>-good``, then updated to ``<name>-gone``,
    whose model (``s3://models/<name>-gone/model.tar.gz``) is not there."""
    create_model(sagemaker, f"{name}-good")
    create_instance_config(sagemaker, f"{name}-good", f"{name}-good")
    sagemaker.create_model(ModelName=f"{name}-gone", PrimaryContainer={
        "ModelDataUrl": f"s3://models/{name}-gone/model.tar.gz"})  # fmt: skip
    create_instance_config(sagemaker, f"{name}-gone", f"{name}-gone")
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-good")
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST)
    sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-gone")


def reverted_and_removed(sagemaker: Any, name: str) -> None:
    """``updated_to_a_missing_model``'s endpoint updated back (taken, and in service on its
    first config again), then it and its configs and models deleted."""
    sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-good")
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST)
    described = sagemaker.describe_endpoint(EndpointName=name)
    assert described["EndpointConfigName"] == f"{name}-good" and "FailureReason" not in described
    sagemaker.delete_endpoint(EndpointName=name)
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=FAST)
    for kept in (f"{name}-good", f"{name}-gone"):
        sagemaker.delete_endpoint_config(EndpointConfigName=kept)
        sagemaker.delete_model(ModelName=kept)


def test_an_update_that_cannot_load_shows_why_and_a_revert_is_taken(
    sagemaker: Any, runtime: Any, abalone_model: AbaloneModel
) -> None:
    """The old config serves while the update cannot roll out: DescribeEndpoint says why, and
    an UpdateEndpoint back to it is taken (it was refused as in progress)."""
    updated_to_a_missing_model(sagemaker, "reverted")
    # the previous config's replica serves, and is counted from the start (it said 0 of 0 at
    # once, then 0 of 1, while it served)
    counts = sagemaker.describe_endpoint(EndpointName="reverted")["ProductionVariants"][0]
    assert (counts["CurrentInstanceCount"], counts["DesiredInstanceCount"]) == (1, 1), counts
    wait_until(lambda: "FailureReason" in sagemaker.describe_endpoint(EndpointName="reverted"),
               60, "the update's failure to show")  # fmt: skip
    described = sagemaker.describe_endpoint(EndpointName="reverted")
    assert described["EndpointStatus"] == "Updating"
    assert described["FailureReason"].startswith("ModelLoadFailed: the new spec cannot roll out")
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    assert "reverted-gone/model.tar.gz" in described["FailureReason"]
    rows = abalone_model.test_rows[:5]
    answer = runtime.invoke_endpoint(EndpointName="reverted", ContentType="text/csv",
                                     Body=to_csv(rows))  # fmt: skip
    np.testing.assert_allclose(scores(answer["Body"].read().decode()),
                               expected(abalone_model, rows), rtol=1e-6)  # fmt: skip
    reverted_and_removed(sagemaker, "reverted")


def test_an_update_that_cannot_load_keeps_its_failure_reason_while_its_model_is_retried(
    sagemaker: Any, up: Up
) -> None:
    """While the update's model is tried again (every few seconds, doubling), the endpoint
    said ``Updating`` without a FailureReason from each retry's start until its server failed
    again, and an UpdateEndpoint sent then was refused as in progress. Polled through a retry
    (its server seen running), every answer has the reason, and the fixing update is taken at
    once."""
    updated_to_a_missing_model(sagemaker, "retried")
    wait_until(lambda: "FailureReason" in sagemaker.describe_endpoint(EndpointName="retried"),
               60, "the update's failure to show")  # fmt: skip
    answers, retry_running = set(), False
    for _ in range(60):  # about 15 s: the first retry comes 5 s after the first failure
        described = sagemaker.describe_endpoint(EndpointName="retried")
        reason = described.get("FailureReason", "none")
        answers.add((described["EndpointStatus"], reason.split(" (")[0]))
        processes = up.status("retried")["processes"]
        retry_running |= any(p["running"] and not p["outgoing"] for p in processes)
        time.sleep(0.25)
    assert retry_running, "no retry of the model ran while polled"
    assert answers == {("Updating", "ModelLoadFailed: the new spec cannot roll out")}
    reverted_and_removed(sagemaker, "retried")  # taken at once: no wait before it


def test_an_endpoint_invoked_right_after_its_create_is_told_it_is_creating(
    sagemaker: Any, up: Up, abalone_model: AbaloneModel
) -> None:
    """The gateway heard of a new endpoint at the supervisor's next round only: invoked at
    once, it answered 404 "endpoint not found" for up to half a second while DescribeEndpoint
    said Creating. Invocations sent without pause from before the CreateEndpoint on: every
    one sent after its answer came is told the endpoint is Creating (or served), none that it
    does not exist, and without up's own namespace."""
    create_model(sagemaker, "early-model")
    create_instance_config(sagemaker, "early-config", "early-model")
    once = client(up, "sagemaker-runtime", retries={"total_max_attempts": 1})
    row = to_csv(abalone_model.test_rows[:1])  # served once it is in service
    answers: list[tuple[float, int, str]] = []  # (sent at, HTTP status, message)
    stop = threading.Event()

    def invoke_until_stopped() -> None:
        for _ in range(2000):  # a bound: stopped after about 2 s
            if stop.is_set():
                return
            sent = time.monotonic()
            try:
                once.invoke_endpoint(EndpointName="early", ContentType="text/csv", Body=row)
                answers.append((sent, 200, ""))
            except ClientError as exc:
                error = exc.response
                status = error["ResponseMetadata"]["HTTPStatusCode"]
                answers.append((sent, status, error["Error"]["Message"]))

    invokers = [threading.Thread(target=invoke_until_stopped) for _ in range(2)]
    for invoker in invokers:
        invoker.start()
    try:
        time.sleep(0.2)  # they run: the ones before the create are told "not found"
        sagemaker.create_endpoint(EndpointName="early", EndpointConfigName="early-config")
        created = time.monotonic()
        time.sleep(2.0)
    finally:
        stop.set()
        for invoker in invokers:
            invoker.join(90)
    before = {(status, message) for sent, status, message in answers if sent < created}
    after = [(status, message) for sent, status, message in answers if sent > created]
    assert (404, "endpoint early not found") in before, before
    assert after and after[0][0] == 400, after[:3]
    for status, message in after:
        creating = message.startswith("endpoint early is Creating (")
        assert status == 200 or (status == 400 and creating), (status, message)
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="early", WaiterConfig=FAST)
    sagemaker.delete_endpoint(EndpointName="early")
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName="early", WaiterConfig=FAST)
    sagemaker.delete_endpoint_config(EndpointConfigName="early-config")
    sagemaker.delete_model(ModelName="early-model")


def test_every_operations_not_found_and_validation_errors(sagemaker: Any, up: Up) -> None:
    """What boto3 lets through (its own checks catch missing and mistyped members) is refused
    by the API with the platform's codes."""
    missing = {
        sagemaker.describe_model: {"ModelName": "nothing"},
        sagemaker.delete_model: {"ModelName": "nothing"},
        sagemaker.describe_endpoint_config: {"EndpointConfigName": "nothing"},
        sagemaker.delete_endpoint_config: {"EndpointConfigName": "nothing"},
        sagemaker.describe_endpoint: {"EndpointName": "nothing"},
        sagemaker.delete_endpoint: {"EndpointName": "nothing"},
        sagemaker.update_endpoint: {"EndpointName": "nothing", "EndpointConfigName": "nothing"},
        sagemaker.create_endpoint: {"EndpointName": "nothing", "EndpointConfigName": "nothing"},
    }
    for call, request in missing.items():
        assert code_of(call, **request) == "ValidationException", call
    for call in (sagemaker.describe_transform_job, sagemaker.stop_transform_job):
        assert code_of(call, TransformJobName="nothing") == "ValidationException"
    with pytest.raises(WaiterError, match="ValidationException"):
        sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="nothing",
                                                         WaiterConfig=FAST)  # fmt: skip
    orphan = transform_request("orphan", "no-such-model", "x")
    assert code_of(sagemaker.create_transform_job, **orphan) == "ValidationException"

    assert code_of(sagemaker.create_model, ModelName="torch", ExecutionRoleArn=ROLE,
                   PrimaryContainer={"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
                                     "pytorch-inference:2.1", "ModelDataUrl": MODEL_URL}
                   ) == "ValidationException"  # fmt: skip
    assert code_of(sagemaker.create_model, ModelName="bad_name!", PrimaryContainer={
        "ModelDataUrl": MODEL_URL}) == "ValidationException"  # fmt: skip
    create_model(sagemaker, "errors-model")
    assert code_of(sagemaker.create_model, ModelName="Errors-Model", PrimaryContainer={
        "ModelDataUrl": MODEL_URL}) == "ValidationException"  # fmt: skip
    variant = {"VariantName": "v", "ModelName": "errors-model",
               "ServerlessConfig": {"MemorySizeInMB": 1500, "MaxConcurrency": 5}}  # fmt: skip
    with pytest.raises(ClientError, match="ServerlessConfig.MemorySizeInMB"):
        sagemaker.create_endpoint_config(EndpointConfigName="bad", ProductionVariants=[variant])
    two = [{**variant, "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}] * 2
    assert code_of(sagemaker.create_endpoint_config, EndpointConfigName="bad",
                   ProductionVariants=two) == "ValidationException"  # fmt: skip
    sagemaker.create_endpoint_config(EndpointConfigName="errors-config",
                                     ProductionVariants=two[:1])  # fmt: skip
    assert code_of(sagemaker.create_endpoint_config, EndpointConfigName="Errors-Config",
                   ProductionVariants=two[:1]) == "ValidationException"  # fmt: skip
    assert code_of(sagemaker.create_endpoint, EndpointName="9-starts-with-a-digit",
                   EndpointConfigName="errors-config") == "ValidationException"  # fmt: skip
    for call in (sagemaker.list_models, sagemaker.list_endpoint_configs, sagemaker.list_endpoints,
                 sagemaker.list_transform_jobs):  # fmt: skip
        assert code_of(call, MaxResults=1000) == "ValidationException", call
        assert code_of(call, NextToken="not-a-token") == "ValidationException", call
    # boto3 checks InitialInstanceCount's minimum, a client told not to (or a raw request) does
    # not: a serverless variant's count of 0 was dropped silently
    unchecked = client(up, "sagemaker", parameter_validation=False)
    mixed = {**two[0], "InitialInstanceCount": 0}
    with pytest.raises(ClientError, match=r"ProductionVariants\[0\]\.InitialInstanceCount: a "
                                          "serverless variant"):  # fmt: skip
        unchecked.create_endpoint_config(EndpointConfigName="mixed", ProductionVariants=[mixed])
    # boto3 checks ProvisionedConcurrency's minimum too: 0 was taken and described back
    unprovisioned = {**two[0], "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5,
                                                    "ProvisionedConcurrency": 0}}  # fmt: skip
    with pytest.raises(ClientError, match=r"ServerlessConfig\.ProvisionedConcurrency must be 1 "
                                          "or more, got 0"):  # fmt: skip
        unchecked.create_endpoint_config(EndpointConfigName="unprovisioned",
                                         ProductionVariants=[unprovisioned])  # fmt: skip
    assert code_of(sagemaker.describe_endpoint_config,
                   EndpointConfigName="unprovisioned") == "ValidationException"  # fmt: skip
    # a rule across fields said in the spec's names ("minReplicas must not exceed maxReplicas")
    scaled = {"VariantName": "v", "ModelName": "errors-model", "InstanceType": "ml.m5.large",
              "InitialInstanceCount": 1, "ManagedInstanceScaling": {
                  "Status": "ENABLED", "MinInstanceCount": 3, "MaxInstanceCount": 2}}  # fmt: skip
    said = r"\.ManagedInstanceScaling: MinInstanceCount must not exceed MaxInstanceCount"
    with pytest.raises(ClientError, match=said):
        sagemaker.create_endpoint_config(EndpointConfigName="scaled", ProductionVariants=[scaled])
    bad_job = transform_request("bad-job", "errors-model", "x") | {"BatchStrategy": "Whatever"}
    with pytest.raises(ClientError, match="BatchStrategy"):
        sagemaker.create_transform_job(**bad_job)
    sagemaker.delete_endpoint_config(EndpointConfigName="errors-config")
    sagemaker.delete_model(ModelName="errors-model")

    import httpx
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest("POST", up.url + "/", data=b"{}",
                         headers={"X-Amz-Target": "SageMaker.CreateTrainingJob",
                                  "Content-Type": "application/x-amz-json-1.1"})  # fmt: skip
    keys = Credentials(ACCESS_KEY_ID, read_token(up.token_file))
    SigV4Auth(keys, "sagemaker", REGION).add_auth(request)
    unknown = httpx.post(up.url + "/", content=b"{}", timeout=10.0, headers=dict(request.headers))
    assert (unknown.status_code, unknown.json()["__type"]) == (400, "UnknownOperationException")


def test_a_damaged_record_file_is_ignored_and_named_not_a_500_for_its_kind(
    sagemaker: Any, up: Up
) -> None:
    """One damaged file under ``<state>/platform/`` made every list, describe and create of
    its kind an InternalFailure until someone found and deleted it."""
    create_model(sagemaker, "kept-model")
    damaged = up.state_dir / "platform" / "models" / "zz-damaged.json"
    damaged.write_text('{"ModelName": "tr')
    (up.state_dir / "platform" / "models" / "zz-list.json").write_text("[1, 2]")
    try:
        names = [m["ModelName"] for m in sagemaker.list_models()["Models"]]
        assert "kept-model" in names
        assert code_of(sagemaker.describe_model, ModelName="zz-damaged") == "ValidationException"
        create_model(sagemaker, "another-model")
        assert f"{damaged} is not a JSON record" in up.log_path.read_text()
    finally:
        damaged.unlink()
        (up.state_dir / "platform" / "models" / "zz-list.json").unlink()
        for name in ("kept-model", "another-model"):
            sagemaker.delete_model(ModelName=name)


def test_an_api_endpoint_replaced_by_a_manifest_of_its_name_is_described_as_that(
    sagemaker: Any, up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``infermodes delete`` and ``apply`` of a manifest under an API endpoint's name: the API
    described the new endpoint as its own, with the old one's config (InService,
    EndpointConfigName); it is a manifest's endpoint, which the API does not describe."""
    import httpx
    import yaml

    create_model(sagemaker, "swap-model")
    sagemaker.create_endpoint_config(EndpointConfigName="swap-config", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "swap-model",
         "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2}}])  # fmt: skip
    sagemaker.create_endpoint(EndpointName="swap", EndpointConfigName="swap-config")
    assert sagemaker.describe_endpoint(EndpointName="swap")["EndpointConfigName"] == "swap-config"
    deleted = httpx.delete(f"{up.url}/_infermodes/endpoints/swap", headers=up.headers)
    assert deleted.status_code < 300, deleted.text
    manifest = {"apiVersion": "infermodes.dev/v1alpha1", "kind": "InferenceEndpoint",
                "metadata": {"name": "swap"},
                "spec": {"mode": "realtime", "model": {"uri": MODEL_URL},
                         "realtime": {"minReplicas": 1, "maxReplicas": 1}}}  # fmt: skip
    applied = httpx.post(f"{up.url}/_infermodes/endpoints", content=yaml.safe_dump(manifest),
                         headers=up.headers)  # fmt: skip
    assert applied.status_code == 200, applied.text
    # a manifest's endpoint, as any other: not the API's to describe
    assert code_of(sagemaker.describe_endpoint, EndpointName="swap") == "ValidationException"
    assert "swap" not in [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]]
    deleted = httpx.delete(f"{up.url}/_infermodes/endpoints/swap", headers=up.headers)
    assert deleted.status_code < 300, deleted.text
    sagemaker.delete_endpoint_config(EndpointConfigName="swap-config")
    sagemaker.delete_model(ModelName="swap-model")


def test_a_manifest_over_an_api_endpoint_is_refused_naming_the_api_and_what_to_do(
    tmp_path: Path,
) -> None:
    """``infermodes apply`` (and ``up -f`` at start) of a manifest under the name of an endpoint
    CreateEndpoint made replaced it without a word, after which DescribeEndpoint said it did
    not exist: refused instead, as ``kubectl apply`` refuses to take over a field another
    manager owns, naming the API and how to proceed; the API's endpoint is left as it was."""
    import subprocess

    import yaml

    from tests.support.processes import INFERMODES

    with running_up(tmp_path / "state", [], tmp_path / "up.log") as up:
        sagemaker = client(up, "sagemaker")
        create_model(sagemaker, "owned-model")
        sagemaker.create_endpoint_config(EndpointConfigName="owned-config", ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "owned-model",
             "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2}}])  # fmt: skip
        sagemaker.create_endpoint(EndpointName="Owned", EndpointConfigName="owned-config")
        manifest = tmp_path / "owned.yaml"
        manifest.write_text(yaml.safe_dump({
            "apiVersion": "infermodes.dev/v1alpha1", "kind": "InferenceEndpoint",
            "metadata": {"name": "owned"},
            "spec": {"mode": "realtime", "model": {"uri": MODEL_URL},
                     "realtime": {"minReplicas": 1, "maxReplicas": 1}}}))  # fmt: skip
        refused = subprocess.run([INFERMODES, "apply", "-f", str(manifest)], capture_output=True,
                                 text=True, timeout=120, env=up.cli_env)  # fmt: skip
        assert refused.returncode == 1, refused
        said = (
            f"{manifest} (owned): endpoint Owned was made through the platform API "
            "(CreateEndpoint): change it there (UpdateEndpoint), or delete it first "
            "(DeleteEndpoint, or infermodes delete owned) to apply this manifest in its place"
        )
        assert said in refused.stderr, refused.stderr
        assert sagemaker.describe_endpoint(EndpointName="Owned")["EndpointConfigName"] == (
            "owned-config")  # fmt: skip
        # a folder whose last file up refuses: none of its files applied (the first one was)
        folder = tmp_path / "folder"
        folder.mkdir()
        (folder / "a.yaml").write_text(manifest.read_text().replace("owned", "first-of-folder"))
        (folder / "z.yaml").write_text(manifest.read_text())
        refused = subprocess.run([INFERMODES, "apply", "-f", str(folder)], capture_output=True,
                                 text=True, timeout=120, env=up.cli_env)  # fmt: skip
        assert refused.returncode == 1 and refused.stdout == "", refused
        assert f"{folder / 'z.yaml'} (owned): endpoint Owned was made" in refused.stderr
        listed = subprocess.run([INFERMODES, "get"], capture_output=True, text=True,
                                timeout=120, env=up.cli_env)  # fmt: skip
        assert "first-of-folder" not in listed.stdout, listed

        up.stop()
        up.files = [manifest]  # the same manifest at up's start
        with pytest.raises(RuntimeError, match="infermodes up exited"):
            up.start()
        assert "(owned): endpoint Owned was made through the platform API" in up.log
        up.files = []
        up.start()
        assert sagemaker.describe_endpoint(EndpointName="Owned")["EndpointConfigName"] == (
            "owned-config")  # fmt: skip


def test_managed_instance_scaling_with_a_status_not_the_platforms_is_refused(
    sagemaker: Any,
) -> None:
    """boto3 sends any string for the enum: "Enabled" was read as not ENABLED and the config
    kept, its MinInstanceCount and MaxInstanceCount dropped without a word."""
    create_model(sagemaker, "status-model")
    for status in ("Enabled", "on", ""):
        scaled = {"VariantName": "v", "ModelName": "status-model", "InstanceType": "ml.m5.large",
                  "InitialInstanceCount": 1, "ManagedInstanceScaling": {
                      "Status": status, "MinInstanceCount": 1, "MaxInstanceCount": 3}}  # fmt: skip
        with pytest.raises(ClientError) as caught:
            sagemaker.create_endpoint_config(EndpointConfigName="status-config",
                                             ProductionVariants=[scaled])  # fmt: skip
        error = caught.value.response["Error"]
        assert error["Code"] == "ValidationException"
        assert "ManagedInstanceScaling.Status" in error["Message"]
        assert "ENABLED, DISABLED" in error["Message"]
    sagemaker.delete_model(ModelName="status-model")


def scaled_config(sagemaker: Any, name: str, model: str, initial: int) -> dict[str, Any]:
    """A config whose variant starts at ``initial`` instances and is managed within 1..5."""
    scaling = {"Status": "ENABLED", "MinInstanceCount": 1, "MaxInstanceCount": 5}
    variant = {"VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.m5.large",
               "InitialInstanceCount": initial, "ManagedInstanceScaling": scaling}  # fmt: skip
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    return scaling


def counts(sagemaker: Any, name: str) -> tuple[str, int, int]:
    described = sagemaker.describe_endpoint(EndpointName=name)
    variant = described["ProductionVariants"][0]
    return (described["EndpointStatus"], variant["CurrentInstanceCount"],
            variant["DesiredInstanceCount"])  # fmt: skip


def test_managed_instance_scaling_starts_at_the_initial_count_and_an_update_at_the_new_one(
    sagemaker: Any,
) -> None:
    """InitialInstanceCount 3 within ManagedInstanceScaling 1..5 started at MinInstanceCount
    (1); the platform starts the variant at 3, and an UpdateEndpoint's new config's variant at
    its own InitialInstanceCount (2)."""
    create_model(sagemaker, "initial-model")
    scaling = scaled_config(sagemaker, "initial-3", "initial-model", 3)
    scaled_config(sagemaker, "initial-2", "initial-model", 2)
    sagemaker.create_endpoint(EndpointName="initial", EndpointConfigName="initial-3")
    status, _, desired = counts(sagemaker, "initial")
    assert (status, desired) in (("Creating", 0), ("Creating", 3)), counts(sagemaker, "initial")
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="initial", WaiterConfig=FAST)
    assert counts(sagemaker, "initial") == ("InService", 3, 3)  # all three, not the first
    variant = sagemaker.describe_endpoint(EndpointName="initial")["ProductionVariants"][0]
    assert variant["ManagedInstanceScaling"] == scaling  # boto3 reads it back
    sagemaker.update_endpoint(EndpointName="initial", EndpointConfigName="initial-2")
    wait_until(lambda: counts(sagemaker, "initial") == ("InService", 2, 2), 60,
               "the new config's two instances in service", 0.5)  # fmt: skip
    sagemaker.delete_endpoint(EndpointName="initial")
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName="initial", WaiterConfig=FAST)
    for config in ("initial-3", "initial-2"):
        sagemaker.delete_endpoint_config(EndpointConfigName=config)
    sagemaker.delete_model(ModelName="initial-model")


def test_an_async_variant_starts_at_its_initial_count_within_managed_scaling(
    sagemaker: Any,
) -> None:
    """An async variant with InitialInstanceCount 3 under ManagedInstanceScaling 0..5 started
    from zero (its minimum); the platform starts its instances at 3, and its backlog scaling
    moves them from there (the start holds through the scale-in cooldown). It said InService
    with CurrentInstanceCount 0 as soon as created (and updated): it is InService once its
    initial instances run, so a waiter that passes finds them running."""
    create_model(sagemaker, "async-initial-model")
    # the update's workers run otherwise (two requests each): new workers, none ready at first
    for name, initial, each in (("async-initial", 3, 1), ("async-initial-2", 1, 2)):
        variant = {"VariantName": "AllTraffic", "ModelName": "async-initial-model",
                   "InstanceType": "ml.m5.large", "InitialInstanceCount": initial,
                   "ManagedInstanceScaling": {"Status": "ENABLED", "MinInstanceCount": 0,
                                              "MaxInstanceCount": 5}}  # fmt: skip
        sagemaker.create_endpoint_config(
            EndpointConfigName=name, ProductionVariants=[variant],
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://async/initial"},
                                  "ClientConfig": {"MaxConcurrentInvocationsPerInstance": each}},
        )  # fmt: skip
    sagemaker.create_endpoint(EndpointName="async-initial", EndpointConfigName="async-initial")
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="async-initial",
                                                     WaiterConfig=FAST)  # fmt: skip
    assert counts(sagemaker, "async-initial") == ("InService", 3, 3)
    sagemaker.update_endpoint(EndpointName="async-initial", EndpointConfigName="async-initial-2")
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName="async-initial",
                                                     WaiterConfig=FAST)  # fmt: skip
    assert counts(sagemaker, "async-initial") == ("InService", 1, 1)
    sagemaker.delete_endpoint(EndpointName="async-initial")
    sagemaker.get_waiter("endpoint_deleted").wait(EndpointName="async-initial", WaiterConfig=FAST)
    for name in ("async-initial", "async-initial-2"):
        sagemaker.delete_endpoint_config(EndpointConfigName=name)
    sagemaker.delete_model(ModelName="async-initial-model")
