"""Platform requests -> records and InferenceEndpoint objects: each mode's fields, the
actuator's defaults, and a ValidationException naming the field for what we cannot run."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infermodes.endpoints.async_plan import async_block
from infermodes.endpoints.spec import BatchSpec, EndpointSpec
from infermodes.platform.errors import ValidationException
from infermodes.platform.translate import (
    KIND_LABEL,
    NAME_ANNOTATION,
    REQUEST_ANNOTATION,
    Defaults,
    endpoint_config_record,
    endpoint_object,
    model_record,
    transform_object,
)

XGBOOST = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
DEFAULTS = Defaults(file_uris=True)  # as under up


def model(**container: Any) -> dict[str, Any]:
    request = {"ModelName": "abalone", "ExecutionRoleArn": "arn:aws:iam::123456789012:role/r",
               "PrimaryContainer": {"Image": XGBOOST, "ModelDataUrl": "s3://b/model.tar.gz",
                                    **container}}  # fmt: skip
    return model_record(request, DEFAULTS)


def config(variant: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    request = {"EndpointConfigName": "cfg", "ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": "abalone",
         **(variant or {"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}})}],
        **more}  # fmt: skip
    return endpoint_config_record(request, {"abalone": model()}, DEFAULTS)


def spec_of(cfg: dict[str, Any], defaults: Defaults = DEFAULTS, **container: Any) -> Any:
    return endpoint_object("Abalone-EP", cfg, model(**container), defaults)


def test_serverless_config_becomes_a_serverless_endpoint_named_in_lower_case() -> None:
    cfg = config({"ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 7,
                                       "ProvisionedConcurrency": 2}})  # fmt: skip
    obj = spec_of(cfg)
    assert obj["metadata"]["name"] == "abalone-ep"
    assert obj["metadata"]["annotations"][NAME_ANNOTATION] == "Abalone-EP"
    assert obj["metadata"]["labels"][KIND_LABEL] == "Endpoint"
    assert obj["spec"] == {
        "mode": "serverless",
        "model": {"uri": "s3://b/model.tar.gz"},
        "serverless": {"memorySizeInMB": 3072, "maxConcurrency": 7, "provisionedConcurrency": 2},
    }
    assert json.loads(obj["metadata"]["annotations"][REQUEST_ANNOTATION])["Image"] == XGBOOST
    EndpointSpec.model_validate(obj["spec"])


def test_instances_become_a_realtime_endpoint_of_that_many_replicas() -> None:
    obj = spec_of(config({"InstanceType": "ml.m5.large", "InitialInstanceCount": 3}))
    assert obj["spec"]["mode"] == "realtime"
    assert obj["spec"]["realtime"] == {"minReplicas": 3, "maxReplicas": 3}


def test_managed_instance_scaling_starts_at_the_initial_count_and_scales_within_its_range() -> None:
    """The platform starts the variant at InitialInstanceCount (3) and scales within 1..5 from
    there; the endpoint started at MinInstanceCount (1)."""
    scaled = {"InstanceType": "ml.m5.large", "InitialInstanceCount": 3,
              "ManagedInstanceScaling": {"Status": "ENABLED", "MinInstanceCount": 1,
                                         "MaxInstanceCount": 5}}  # fmt: skip
    spec = spec_of(config(scaled))["spec"]
    assert spec["realtime"] == {"minReplicas": 1, "maxReplicas": 5, "initialReplicas": 3}
    assert EndpointSpec.model_validate(spec).realtime_block().first_replicas() == 3


def test_an_async_variant_under_managed_scaling_starts_at_its_initial_count() -> None:
    """The platform starts an async variant's instances at InitialInstanceCount (3) and its
    backlog scaling moves them within 0..5; the pool started at MinInstanceCount (0)."""
    scaled = {"InstanceType": "ml.m5.large", "InitialInstanceCount": 3,
              "ManagedInstanceScaling": {"Status": "ENABLED", "MinInstanceCount": 0,
                                         "MaxInstanceCount": 5}}  # fmt: skip
    cfg = config(scaled, AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://b/o"}})
    spec = spec_of(cfg)["spec"]
    assert (spec["async"]["minReplicas"], spec["async"]["maxReplicas"]) == (0, 5)
    assert spec["async"]["initialReplicas"] == 3
    assert async_block(EndpointSpec.model_validate(spec)).first_replicas() == 3


def test_counts_without_a_status_are_kept_and_not_used() -> None:
    """The platform's model does not require Status (ManagedInstanceScalingStatus is optional):
    accepted; without ENABLED the instances are InitialInstanceCount's, as with DISABLED."""
    variant = {
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 2,
        "ManagedInstanceScaling": {"MinInstanceCount": 1, "MaxInstanceCount": 5},
    }
    assert spec_of(config(variant))["spec"]["realtime"] == {"minReplicas": 2, "maxReplicas": 2}


@pytest.mark.parametrize(
    ("initial", "scaling", "said"),
    [
        (5, {"Status": "ENABLED", "MinInstanceCount": 1, "MaxInstanceCount": 3},
         "ProductionVariants[0].InitialInstanceCount 5 lies outside ManagedInstanceScaling's "
         "range (MinInstanceCount 1, MaxInstanceCount 3)"),
        (1, {"Status": "ENABLED", "MinInstanceCount": 2, "MaxInstanceCount": 4},
         "ProductionVariants[0].InitialInstanceCount 1 lies outside"),
        (2, {"Status": "ENABLED", "MinInstanceCount": 3},
         "ProductionVariants[0].InitialInstanceCount 2 lies outside"),
        (1, {"Status": "DISABLED", "MinInstanceCount": -1, "MaxInstanceCount": 2},
         "ProductionVariants[0].ManagedInstanceScaling.MinInstanceCount must be 0 or more, got -1"),
        (1, {"Status": "DISABLED", "MaxInstanceCount": 0},
         "ProductionVariants[0].ManagedInstanceScaling.MaxInstanceCount must be 1 or more, got 0"),
        (1, {"Status": "DISABLED", "MinInstanceCount": 3, "MaxInstanceCount": 2},
         "ProductionVariants[0].ManagedInstanceScaling: MinInstanceCount must not exceed "
         "MaxInstanceCount"),
    ],
)  # fmt: skip
def test_instance_counts_that_cannot_all_hold_are_refused_naming_the_field(
    initial: int, scaling: dict[str, Any], said: str
) -> None:
    """An InitialInstanceCount outside the managed range was accepted and silently dropped
    (the endpoint ran MinInstanceCount); counts the platform's model refuses (Min below 0,
    Max below 1) or a Min above the Max were accepted beside a DISABLED status."""
    variant = {"InstanceType": "ml.m5.large", "InitialInstanceCount": initial,
               "ManagedInstanceScaling": scaling}  # fmt: skip
    with pytest.raises(ValidationException) as refused:
        config(variant)
    assert said in str(refused.value)


def test_managed_instance_scaling_beside_a_serverless_config_is_refused_not_ignored() -> None:
    """A serverless variant has no instances to scale: the range was accepted and dropped."""
    variant = {"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
               "ManagedInstanceScaling": {"Status": "ENABLED", "MinInstanceCount": 1,
                                          "MaxInstanceCount": 3}}  # fmt: skip
    with pytest.raises(ValidationException) as refused:
        config(variant)
    assert str(refused.value).startswith(
        "ProductionVariants[0].ManagedInstanceScaling: a serverless variant (ServerlessConfig) "
        "has no instances"
    )


def test_counts_beside_a_disabled_status_are_kept_and_not_used() -> None:
    """The platform's DISABLED: the instances are InitialInstanceCount's; the counts are kept
    (DescribeEndpointConfig answers them), as they are valid."""
    variant = {"InstanceType": "ml.m5.large", "InitialInstanceCount": 2,
               "ManagedInstanceScaling": {"Status": "DISABLED", "MinInstanceCount": 1,
                                          "MaxInstanceCount": 5}}  # fmt: skip
    assert spec_of(config(variant))["spec"]["realtime"] == {"minReplicas": 2, "maxReplicas": 2}


def test_async_config_becomes_an_async_endpoint_with_its_paths_concurrency_and_notifications() -> (
    None
):
    async_config = {
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 8},
        "OutputConfig": {
            "S3OutputPath": "s3://b/out/",
            "S3FailurePath": "s3://b/failed/",
            "NotificationConfig": {"SuccessTopic": "arn:aws:sns:us-east-1:123456789012:ok",
                                   "ErrorTopic": "http://127.0.0.1:9/errors"},
        },
    }  # fmt: skip
    cfg = config({"InstanceType": "ml.m5.large", "InitialInstanceCount": 1},
                 AsyncInferenceConfig=async_config)  # fmt: skip
    defaults = Defaults(namespace="ns", storage_secret="s3-keys", broker_secret="amqp")
    obj = spec_of(cfg, defaults)
    assert obj["metadata"]["namespace"] == "ns"
    assert obj["spec"]["storageSecretRef"] == {"name": "s3-keys"}
    assert obj["spec"]["async"] == {
        "outputPath": "s3://b/out/",
        "failurePath": "s3://b/failed/",
        "maxConcurrentInvocationsPerInstance": 8,
        "minReplicas": 1,
        "maxReplicas": 1,
        "notification": {"topic": True, "errorWebhook": "http://127.0.0.1:9/errors"},
        "brokerSecretRef": {"name": "amqp"},
    }
    EndpointSpec.model_validate(obj["spec"])


@pytest.mark.parametrize(
    "topic",
    ["ftp://127.0.0.1/x", "not a topic", "", " http://127.0.0.1:9/lead",
     "arn:aws:sns:us-east-1:123456789012:t\nx", "arn:aws:sns:us-east-1:1:t",
     "arn:aws:sqs:us-east-1:123456789012:q", "arn:aws:sns:us-east-1:123456789012:"],
)  # fmt: skip
def test_a_topic_neither_an_sns_arn_nor_a_webhook_is_refused_naming_the_field(topic: str) -> None:
    """Each was taken as an SNS topic ARN, announced nowhere and echoed by DescribeEndpoint."""
    for key in ("SuccessTopic", "ErrorTopic"):
        output = {"S3OutputPath": "s3://b/o", "NotificationConfig": {key: topic}}
        with pytest.raises(ValidationException) as refused:
            async_config(output, DEFAULTS)
        assert str(refused.value) == (
            f"AsyncInferenceConfig.OutputConfig.NotificationConfig.{key}: must be an SNS topic "
            "ARN (arn:<partition>:sns:<region>:<12-digit account>:<name>), announced on the "
            "topic exchange, or an http:// or https:// URL, the webhook"
        )


@pytest.mark.parametrize("scheme", ["HTTP", "Https", "hTTp"])
def test_a_webhook_scheme_in_any_case_is_the_webhook_as_in_a_spec(scheme: str) -> None:
    """HTTP://... was kept as an SNS topic (dropped) where a spec's field takes it as a
    webhook: a URL's scheme is case-insensitive."""
    url = f"{scheme}://127.0.0.1:9/hook"
    notify = {"SuccessTopic": url, "ErrorTopic": "arn:aws-cn:sns:cn-north-1:123456789012:t.fifo"}
    cfg = config(ASYNC, AsyncInferenceConfig={"OutputConfig": {
        "S3OutputPath": "s3://b/o", "NotificationConfig": notify}})  # fmt: skip
    assert spec_of(cfg)["spec"]["async"]["notification"] == {"topic": True, "successWebhook": url}


def transform_request(**more: Any) -> dict[str, Any]:
    return {
        "TransformJobName": "Score-1",
        "ModelName": "abalone",
        "MaxConcurrentTransforms": 2,
        "MaxPayloadInMB": 4,
        "BatchStrategy": "SingleRecord",
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": 30, "InvocationsMaxRetries": 1},
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": "s3://b/m"}},
            "ContentType": "application/jsonlines",
            "SplitType": "Line",
            "CompressionType": "Gzip",
        },
        "TransformOutput": {"S3OutputPath": "s3://b/out/", "Accept": "application/json",
                            "AssembleWith": "None"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 3},
        "DataProcessing": {"InputFilter": "$.features", "OutputFilter": "$",
                           "JoinSource": "Input"},
        **more,
    }  # fmt: skip


def test_a_transform_job_becomes_a_batch_endpoint_with_every_field_batch_spec_has() -> None:
    obj = transform_object(transform_request(), model(), DEFAULTS)
    batch = obj["spec"]["batch"]
    assert batch == {
        "input": {"uri": "s3://b/m", "dataType": "ManifestFile", "contentType":
                  "application/jsonlines", "splitType": "Line", "compressionType": "Gzip"},
        "output": {"uri": "s3://b/out/", "accept": "application/json", "assembleWith": "None"},
        "instanceCount": 3,
        "maxConcurrentTransforms": 2,
        "maxPayloadInMB": 4,
        "batchStrategy": "SingleRecord",
        "invocationsMaxRetries": 1,
        "invocationsTimeoutInSeconds": 30,
        "dataProcessing": {"inputFilter": "$.features", "outputFilter": "$",
                           "joinSource": "Input"},
    }  # fmt: skip
    # every field of BatchSpec the platform has is set (resources and stop are ours)
    translated = {BatchSpec.model_fields[name].alias for name in BatchSpec.model_fields}
    assert translated - set(batch) == {"resources", "stop"}
    assert obj["metadata"]["labels"][KIND_LABEL] == "TransformJob"
    EndpointSpec.model_validate(obj["spec"])


def test_a_transform_job_without_split_type_sends_each_object_whole_as_the_platform() -> None:
    """The platform's default SplitType is None; our spec's is Line, which split a
    pretty-printed JSON document into lines that are not JSON."""
    request = transform_request()
    del request["TransformInput"]["SplitType"]
    assert transform_object(request, model(), DEFAULTS)["spec"]["batch"]["input"][
        "splitType"
    ] == "None"  # fmt: skip


def test_a_transform_job_without_assemble_with_concatenates_outputs_as_the_platform() -> None:
    """The platform's default AssembleWith is None (outputs as they are); our spec's is Line,
    which put a newline the platform does not after each mini-batch's JSON answer."""
    request = transform_request()
    del request["TransformOutput"]["AssembleWith"]
    assert transform_object(request, model(), DEFAULTS)["spec"]["batch"]["output"][
        "assembleWith"
    ] == "None"  # fmt: skip


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("text/csv; charset=utf-8", "text/csv"),
        ("application/json; charset=utf-8", "application/json"),
        ('application/jsonlines;charset="UTF-8"', "application/jsonlines"),
        ("Text/CSV", "text/csv"),
        ("application/x-libsvm", "text/libsvm"),
    ],
)
def test_a_content_type_with_parameters_is_read_as_the_model_server_reads_it(
    given: str, read: str
) -> None:
    """The platform sends TransformInput.ContentType as each mini-batch's Content-Type: its
    parameters are the header's, not a type of their own; the spec keeps the header and reads
    it as the model server does; Describe answers what was given."""
    request = transform_request(DataProcessing={})
    request["TransformInput"]["ContentType"] = given
    obj = transform_object(request, model(), DEFAULTS)
    batch = EndpointSpec.model_validate(obj["spec"]).batch
    assert batch is not None and batch.input.content_type == read
    kept = json.loads(obj["metadata"]["annotations"][REQUEST_ANNOTATION])
    assert kept["TransformInput"]["ContentType"] == given


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("text/csv; charset=latin-1", "unsupported charset 'latin-1'; send UTF-8"),
        ("text/csv; header=present", "header=present"),
        ("image/png", "unsupported content type 'image/png'"),
    ],
)
def test_a_content_type_the_instances_cannot_read_names_the_field(given: str, why: str) -> None:
    request = transform_request(DataProcessing={})
    request["TransformInput"]["ContentType"] = given
    with pytest.raises(ValidationException, match=r"TransformInput\.ContentType") as caught:
        transform_object(request, model(), DEFAULTS)
    assert why in str(caught.value)


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("text/csv; charset=utf-8", "text/csv"),
        ("application/json; charset=utf-8", "application/json"),
        ("application/json;q=0.5, application/jsonlines", "application/jsonlines"),
        ("*/*", "text/csv"),
    ],
)
def test_an_accept_with_parameters_is_read_as_the_model_server_reads_it(
    given: str, read: str
) -> None:
    """TransformOutput.Accept is each mini-batch's Accept header: the model server's choice."""
    request = transform_request(DataProcessing={})
    request["TransformOutput"]["Accept"] = given
    obj = transform_object(request, model(), DEFAULTS)
    batch = EndpointSpec.model_validate(obj["spec"]).batch
    assert batch is not None and batch.output.accept == read
    kept = json.loads(obj["metadata"]["annotations"][REQUEST_ANNOTATION])
    assert kept["TransformOutput"]["Accept"] == given


@pytest.mark.parametrize(
    ("given", "why"),
    [("image/png", "cannot produce 'image/png'"), ("text/csv;q=2", "q must be a number")],
)
def test_an_accept_the_instances_cannot_write_names_the_field(given: str, why: str) -> None:
    request = transform_request(DataProcessing={})
    request["TransformOutput"]["Accept"] = given
    with pytest.raises(ValidationException, match=r"TransformOutput\.Accept") as caught:
        transform_object(request, model(), DEFAULTS)
    assert why in str(caught.value)


def test_the_containers_selectable_output_is_kept_for_served_modes_only() -> None:
    obj = spec_of(config(), Environment={"SAGEMAKER_INFERENCE_OUTPUT": "predicted_label"})
    assert obj["spec"]["model"]["inferenceOutput"] == "predicted_label"
    chosen = model(Environment={"SAGEMAKER_INFERENCE_OUTPUT": "predicted_label"})
    with pytest.raises(ValidationException, match="SAGEMAKER_INFERENCE_OUTPUT"):
        transform_object(transform_request(), chosen, DEFAULTS)


@pytest.mark.parametrize(
    ("container", "named"),
    [
        ({"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1"},
         "PrimaryContainer.Image"),
        ({"Mode": "MultiModel"}, "PrimaryContainer.Mode"),
        ({"Environment": {"SAGEMAKER_PROGRAM": "serve.py"}},
         "PrimaryContainer.Environment 'SAGEMAKER_PROGRAM'"),
        ({"ModelDataUrl": None}, "PrimaryContainer.ModelDataUrl"),
        ({"ModelDataUrl": "s3://bucket"}, "PrimaryContainer.ModelDataUrl 's3://bucket' names no"),
        ({"ModelDataUrl": "s3://bucket/models/"}, "PrimaryContainer.ModelDataUrl 's3://bucket/"),
        ({"ModelDataSource": {"S3DataSource": {}}}, "PrimaryContainer.ModelDataSource"),
    ],
)  # fmt: skip
def test_containers_we_cannot_run_are_refused_naming_the_field(
    container: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationException, match=named.replace(".", r"\.")):
        model(**container)


@pytest.mark.parametrize(("key", "said"), [("", "''"), ("A\nB", "'A\\nB'"), ("K" * 200, "'KKKK")])
def test_an_environment_key_we_do_not_run_is_quoted_in_the_refusal(key: str, said: str) -> None:
    """An empty key read 'Environment  is not supported', and a newline in one went into the
    message as it was (r60, item 8): a caller's key is quoted as their other values are."""
    for call, field in ((lambda: model(Environment={key: "v"}), "PrimaryContainer.Environment"),
                        (lambda: transform_object(transform_request(Environment={key: "v"}),
                                                  model(), DEFAULTS), "Environment")):  # fmt: skip
        with pytest.raises(ValidationException) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(f"{field} {said}"), message
        assert "\n" not in message and len(message) < 300, message


def test_models_with_more_than_we_run_are_refused() -> None:
    two = [{"ModelDataUrl": "s3://b/a"}, {"ModelDataUrl": "s3://b/b"}]
    with pytest.raises(ValidationException, match="Containers: inference pipelines"):
        model_record({"ModelName": "m", "Containers": two}, DEFAULTS)
    vpc = {"SecurityGroupIds": ["sg-1"], "Subnets": ["s-1"]}
    with pytest.raises(ValidationException, match="VpcConfig is not supported"):
        model_record({"ModelName": "m", "PrimaryContainer": two[0], "VpcConfig": vpc}, DEFAULTS)


@pytest.mark.parametrize(
    ("variant", "more", "named"),
    [
        ({"ServerlessConfig": {"MemorySizeInMB": 1500, "MaxConcurrency": 5}}, {},
         r"ProductionVariants\[0\]\.ServerlessConfig\.MemorySizeInMB"),
        ({"ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 5,
                               "ProvisionedConcurrency": 6}}, {},
         r"ProductionVariants\[0\]\.ServerlessConfig"),
        # the platform's minimum is 1 (none is left out); the spec's 0 is its "none"
        ({"ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 5,
                               "ProvisionedConcurrency": 0}}, {},
         r"^ProductionVariants\[0\]\.ServerlessConfig\.ProvisionedConcurrency must be 1 or more, "
         r"got 0 \(leave it out to keep none warm\)$"),
        ({"ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 5,
                               "ProvisionedConcurrency": -1}}, {},
         r"^ProductionVariants\[0\]\.ServerlessConfig\.ProvisionedConcurrency must be 1 or more, "
         r"got -1 "),
        ({"InstanceType": "ml.m5.large", "InitialInstanceCount": 101}, {},
         r"ProductionVariants\[0\]\.InitialInstanceCount"),
        ({"InstanceType": "ml.m5.large", "InitialInstanceCount": 1, "AcceleratorType":
          "ml.eia1.medium"}, {}, r"ProductionVariants\[0\]\.AcceleratorType"),
        ({"InstanceType": "ml.m5.large"}, {},
         r"^ProductionVariants\[0\]: InstanceType and InitialInstanceCount go together$"),
        ({"VariantName": "v"}, {},
         r"^ProductionVariants\[0\]: give either ServerlessConfig or InstanceType"),
        # a count beside a ServerlessConfig, 0 too, is a mix (0 was dropped silently)
        ({"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
          "InitialInstanceCount": 0}, {},
         r"^ProductionVariants\[0\]\.InitialInstanceCount: a serverless variant \(Serverless"),
        ({"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
          "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}, {},
         r"^ProductionVariants\[0\]\.InstanceType: a serverless variant"),
        ({"InstanceType": "ml.m5.large", "InitialInstanceCount": 0}, {},
         r"^ProductionVariants\[0\]\.InitialInstanceCount must be 1 or more, got 0$"),
        ({"ServerlessConfig": {"MemorySizeInMB": 1024.0, "MaxConcurrency": 5}}, {},
         r"ServerlessConfig\.MemorySizeInMB must be an integer, got 1024\.0"),
        ({"InstanceType": "ml.m5.large", "InitialInstanceCount": "1"}, {},
         r"ProductionVariants\[0\]\.InitialInstanceCount must be an integer"),
        ({"InstanceType": "ml.m5.large", "InitialInstanceCount": 1},
         {"AsyncInferenceConfig": {"ClientConfig": {"MaxConcurrentInvocationsPerInstance": "4"},
                                   "OutputConfig": {"S3OutputPath": "s3://b/o"}}},
         r"ClientConfig\.MaxConcurrentInvocationsPerInstance must be an integer, got '4'"),
        (None, {"DataCaptureConfig": {"EnableCapture": True}}, "DataCaptureConfig"),
        (None, {"AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://b/o"}}},
         "AsyncInferenceConfig: an asynchronous endpoint runs on instances"),
        ({"InstanceType": "ml.m5.large", "InitialInstanceCount": 1},
         {"AsyncInferenceConfig": {"OutputConfig": {"KmsKeyId": "k", "S3OutputPath": "s3://o"}}},
         r"AsyncInferenceConfig\.OutputConfig\.KmsKeyId"),
        ({"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}, "ModelName": "nope"},
         {}, 'Could not find model "arn:aws:sagemaker:us-east-1:000000000000:model/nope"'),
    ],
)  # fmt: skip
def test_endpoint_configs_we_cannot_run_are_refused_naming_the_field(
    variant: dict[str, Any] | None, more: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationException, match=named):
        config(variant, **more)


def test_one_production_variant_only() -> None:
    variant = {"VariantName": "v", "ModelName": "abalone", "ServerlessConfig":
               {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}  # fmt: skip
    request = {"EndpointConfigName": "cfg", "ProductionVariants": [variant, variant]}
    with pytest.raises(
        ValidationException, match="exactly one production variant per endpoint, got 2"
    ):
        endpoint_config_record(request, {"abalone": model()}, DEFAULTS)


@pytest.mark.parametrize(
    ("more", "named"),
    [
        ({"MaxPayloadInMB": 60, "MaxConcurrentTransforms": 2},
         "TransformJob: MaxPayloadInMB x MaxConcurrentTransforms must not exceed 100"),
        ({"BatchStrategy": "Whatever"}, "BatchStrategy"),
        ({"DataCaptureConfig": {"DestinationS3Uri": "s3://b/c"}}, "DataCaptureConfig"),
        ({"TransformJobName": "1job"}, "must start with a letter"),
        ({"TransformJobName": "a" * 51}, "at most 50 characters"),
        ({"Environment": {"A": "b"}}, "Environment 'A'"),
        # members we would not read, and numbers our schema would take from a string or a bool
        ({"ModelClientConfig": {"Foo": 1}}, "ModelClientConfig.Foo is not supported"),
        ({"DataProcessing": {"JoinSources": "Input"}}, "DataProcessing.JoinSources"),
        ({"TransformInput": {"DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://b/in/",
            "S3DataDistributionType": "FullyReplicated"}}}},
         "S3DataSource.S3DataDistributionType is not supported"),
        ({"MaxPayloadInMB": "6"}, "MaxPayloadInMB must be"),
        ({"MaxPayloadInMB": True}, "MaxPayloadInMB must be"),
        ({"TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": "2"}},
         "InstanceCount must be"),
        ({"ModelClientConfig": {"InvocationsMaxRetries": 1.5}}, "InvocationsMaxRetries must be"),
    ],
)  # fmt: skip
def test_transform_jobs_we_cannot_run_are_refused_naming_the_field(
    more: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationException, match=named):
        transform_object(transform_request(**more), model(), DEFAULTS)


def test_split_types_we_do_not_read_are_refused_naming_the_field() -> None:
    request = transform_request()
    request["TransformInput"]["SplitType"] = "RecordIO"
    with pytest.raises(ValidationException, match=r"TransformInput\.SplitType"):
        transform_object(request, model(), DEFAULTS)


@pytest.mark.parametrize(
    ("more", "named"),
    [
        ({"Containers": {"ModelDataUrl": "s3://b/a"}}, "Containers must be a list"),
        ({"Containers": "abc"}, "Containers must be a list"),
        ({"Containers": [1]}, r"Containers\[0\] must be a structure"),
        ({"PrimaryContainer": {"ModelDataUrl": "s3://b/a"}, "ExecutionRoleArn": {"a": [1]}},
         "ExecutionRoleArn must be a string"),
        ({"PrimaryContainer": {"ModelDataUrl": "s3://b/a"}, "Tags": "x"}, "Tags must be a list"),
        ({"PrimaryContainer": {"ModelDataUrl": "s3://b/a"}, "Tags": [{"Value": "v"}]},
         "Tags must be a list"),
    ],
)  # fmt: skip
def test_model_members_of_the_wrong_type_are_refused_naming_them(
    more: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationException, match=named):
        model_record({"ModelName": "m", **more}, DEFAULTS)


def test_endpoint_config_members_kept_as_given_are_typed() -> None:
    with pytest.raises(ValidationException, match="ExecutionRoleArn must be a string"):
        config(None, ExecutionRoleArn=5)


ON_KUBERNETES = Defaults()  # the default: no file:// URIs
ASYNC = {"InstanceType": "ml.m5.large", "InitialInstanceCount": 1}


def async_config(output: dict[str, Any], defaults: Defaults) -> dict[str, Any]:
    request = {"EndpointConfigName": "cfg", "ProductionVariants": [
        {"VariantName": "v", "ModelName": "abalone", **ASYNC}],
        "AsyncInferenceConfig": {"OutputConfig": output}}  # fmt: skip
    return endpoint_config_record(request, {"abalone": model()}, defaults)


def test_uris_must_be_s3_or_file_and_well_formed() -> None:
    for url in ("s3://", "file://relative/model.json", "http://127.0.0.1:9/m", "m.tar.gz", 5):
        with pytest.raises(ValidationException, match=r"PrimaryContainer\.ModelDataUrl"):
            model(ModelDataUrl=url)
    assert model(ModelDataUrl="file:///srv/m.json")["PrimaryContainer"]["ModelDataUrl"] == (
        "file:///srv/m.json")  # fmt: skip


def test_file_uris_are_refused_where_the_actuator_is_not_the_callers_machine() -> None:
    """The gateway's pods would read their own files (a service-account token,
    /proc/self/environ) for the caller, and failure reasons quote what they read."""
    container = {"ModelDataUrl": "file:///proc/self/environ"}
    with pytest.raises(ValidationException, match=r"ModelDataUrl must be an s3://"):
        model_record({"ModelName": "m", "PrimaryContainer": container}, ON_KUBERNETES)
    for output in ({"S3OutputPath": "file:///tmp/out"},
                   {"S3OutputPath": "s3://b/o", "S3FailurePath": "file:///tmp/f"}):  # fmt: skip
        with pytest.raises(ValidationException, match=r"OutputConfig\.S3(Output|Failure)Path"):
            async_config(output, ON_KUBERNETES)
    assert async_config({"S3OutputPath": "s3://b/o", "S3FailurePath": "s3://b/f"}, ON_KUBERNETES)
    source = {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                              "S3Uri": "file:///var/run/secrets/"}},
              "ContentType": "application/jsonlines"}  # fmt: skip
    for more, named in (({"TransformInput": source}, r"S3DataSource\.S3Uri"),
                        ({"TransformOutput": {"S3OutputPath": "file:///tmp/o",
                                              "Accept": "application/json"}},
                         r"TransformOutput\.S3OutputPath")):  # fmt: skip
        with pytest.raises(ValidationException, match=named):
            transform_object(transform_request(**more), model(), ON_KUBERNETES)
    assert transform_object(transform_request(), model(), ON_KUBERNETES)
    assert transform_object(transform_request(TransformInput=source), model(), DEFAULTS)


def test_requests_too_large_for_an_objects_annotations_are_refused() -> None:
    """Kubernetes refuses an object whose annotations pass 256 KiB (a 500 from the API server
    otherwise); the request is kept in one."""
    processing = {"InputFilter": "$." + "a" * 300_000}
    with pytest.raises(ValidationException, match="too large"):
        transform_object(transform_request(DataProcessing=processing), model(), DEFAULTS)


SPEC_WORDS = re.compile(r"\b(spec\.|minReplicas|maxReplicas|provisionedConcurrency|maxConcurrency"
                        r"|maxPayloadInMB|maxConcurrentTransforms|inputFilter|joinSource|accept "
                        r"|output\.uri)")  # fmt: skip
SCALING = {"InstanceType": "ml.m5.large", "InitialInstanceCount": 1}


@pytest.mark.parametrize(
    ("build", "said"),
    [
        (lambda: config({**SCALING, "ManagedInstanceScaling": {
            "Status": "ENABLED", "MinInstanceCount": 3, "MaxInstanceCount": 2}}),
         "ProductionVariants[0].ManagedInstanceScaling: MinInstanceCount must not exceed "
         "MaxInstanceCount"),
        (lambda: config({**SCALING, "ManagedInstanceScaling": {
            "Status": "ENABLED", "MinInstanceCount": 1, "MaxInstanceCount": 101}},
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://b/o"}}),
         "ProductionVariants[0].ManagedInstanceScaling.MaxInstanceCount: Input should be less "
         "than or equal to 100"),
        (lambda: config({"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2,
                                              "ProvisionedConcurrency": 3}}),
         "ProductionVariants[0].ServerlessConfig: ProvisionedConcurrency must not exceed "
         "MaxConcurrency"),
        (lambda: transform_object(transform_request(
            TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                            "S3Uri": "s3://b/in"}},
                            "ContentType": "text/libsvm"},
            DataProcessing={"JoinSource": "Input"}), model(), DEFAULTS),
         "TransformJob: DataProcessing.InputFilter and DataProcessing.JoinSource need CSV or "
         "JSON input (TransformInput.ContentType), not libsvm"),
        (lambda: transform_object(transform_request(
            DataProcessing={"JoinSource": "Input"},
            TransformOutput={"S3OutputPath": "s3://b/out/", "Accept": "text/csv"}), model(),
            DEFAULTS),
         "TransformJob: DataProcessing.JoinSource Input joins like with like: CSV input "
         "(TransformInput.ContentType) needs TransformOutput.Accept text/csv"),
        (lambda: transform_object(transform_request(
            TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                            "S3Uri": "s3://b/out/in"}},
                            "ContentType": "text/csv"},
            TransformOutput={"S3OutputPath": "s3://b/out", "Accept": "text/csv"}), model(),
            DEFAULTS),
         "TransformJob: TransformInput.DataSource.S3DataSource.S3Uri lies inside "
         "TransformOutput.S3OutputPath (or is it)"),
    ],
)  # fmt: skip
def test_a_rule_across_fields_names_the_platforms_fields_not_the_specs(
    build: Any, said: str
) -> None:
    """The spec's cross-field rules said "minReplicas must not exceed maxReplicas" to a caller
    who wrote MinInstanceCount and MaxInstanceCount (and likewise each rule): the platform's
    names, and no word of the spec's."""
    with pytest.raises(ValidationException) as refused:
        build()
    assert str(refused.value).startswith(said), str(refused.value)
    assert not SPEC_WORDS.search(str(refused.value)), str(refused.value)


@pytest.mark.parametrize(
    ("where", "uri"),
    [("TransformOutput.S3OutputPath", "file:///data/in/z/../"),
     ("TransformOutput.S3OutputPath", "s3://b/zz/../out/"),
     ("TransformInput.DataSource.S3DataSource.S3Uri", "s3://b/./in/")],
)  # fmt: skip
def test_a_transform_job_location_with_a_dot_segment_is_refused_naming_the_field(
    where: str, uri: str
) -> None:
    request = transform_request(DataProcessing={})
    if where == "TransformOutput.S3OutputPath":
        request["TransformOutput"]["S3OutputPath"] = uri
    else:
        request["TransformInput"]["DataSource"]["S3DataSource"] = {"S3DataType": "S3Prefix",
                                                                   "S3Uri": uri}  # fmt: skip
    with pytest.raises(ValidationException) as caught:
        transform_object(request, model(), DEFAULTS)
    assert str(caught.value).startswith(f"{where}: {uri!r} has a "), caught.value
