"""Platform requests -> records and InferenceEndpoint objects (pure functions).

A model or endpoint config is kept as the request that created it plus its ARN and creation
time. An endpoint is an InferenceEndpoint whose mode follows its one production variant
(``ServerlessConfig`` -> serverless, ``InstanceType`` -> realtime, ``AsyncInferenceConfig`` ->
async); a transform job is a batch one. What we cannot run is refused with a
``ValidationException`` naming the field: every structure's members are checked against the
ones we translate, so nothing is silently ignored."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from infermodes.destinations import names_webhook
from infermodes.endpoints.spec import (
    GROUP,
    INITIAL_WITHIN_RANGE,
    INPUT_INSIDE_OUTPUT,
    KIND,
    MAX_NAME_LENGTH,
    PLATFORM_KIND_LABEL,
    PLATFORM_TRANSFORM_JOB,
    PROVISIONED_WITHIN_MAX,
    REPLICA_RANGE,
    VERSION,
    EndpointSpec,
    is_endpoint_name,
    object_name,
    spec_problems,
)
from infermodes.errors import (
    StorageError,
    shown,
)
from infermodes.platform.errors import ValidationException
from infermodes.platform.store import JsonObject
from infermodes.settings import (
    JOIN_LIKE_WITH_LIKE,
    LIBSVM_PROCESSING,
    PAYLOAD_RULE,
    STORAGE_PREFIX,
)
from infermodes.storage import parse_uri

ANNOTATION = "platform.infermodes.dev/"
NAME_ANNOTATION = ANNOTATION + "name"  # the name as given (the object's is lower case)
REQUEST_ANNOTATION = ANNOTATION + "request"  # what Describe answers with, as JSON
MODIFIED_ANNOTATION = ANNOTATION + "last-modified"  # epoch seconds of the last update
UPDATED_ANNOTATION = ANNOTATION + "updated"  # set by UpdateEndpoint: its Creating is Updating
# the production variant's name, which InvokeEndpoint's TargetVariant must match (the gateway's)
VARIANT_ANNOTATION = ANNOTATION + "variant"
KIND_LABEL = PLATFORM_KIND_LABEL  # the actuators read it too: a stopped job's output hold
MAX_ANNOTATIONS = 128 * 1024  # Kubernetes refuses an object whose annotations pass 256 KiB
ENDPOINT, TRANSFORM_JOB = "Endpoint", PLATFORM_TRANSFORM_JOB

# PrimaryContainer.Environment keys the XGBoost container reads that change nothing here, and
# the one we translate; any other key is refused (SAGEMAKER_PROGRAM means a script we do not run).
IGNORED_ENVIRONMENT = {
    "SAGEMAKER_CONTAINER_LOG_LEVEL",
    "SAGEMAKER_REGION",
    "SAGEMAKER_ENABLE_CLOUDWATCH_METRICS",
}
INFERENCE_OUTPUT = "SAGEMAKER_INFERENCE_OUTPUT"
XGBOOST_IMAGE = re.compile(r"(^|/)(sagemaker-)?xgboost(:[^/]*)?$")
PLATFORM_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")  # fullmatch: $ allows a "\n" after
MAX_PLATFORM_NAME = 63
MAX_URI = 1024  # the platform's S3Uri and ModelDataUrl
MAX_ENVIRONMENT_VALUE = 1024  # the platform's, for a container's environment variable


@dataclass(frozen=True)
class Defaults:
    """What the actuator adds to every endpoint and answer: ARNs' region and account, the
    namespace and Secrets on Kubernetes, the image that really runs, and caps on what is kept."""

    region: str = "us-east-1"
    account: str = "000000000000"
    namespace: str | None = None
    storage_secret: str | None = None
    broker_secret: str | None = None
    resolved_image: str = "infermodes/model-server"  # DeployedImages' pattern: no spaces
    max_endpoints: int = 100
    max_records: int = 1000  # models, and endpoint configs, each
    # file:// URIs name files of the machine the actuator runs on: the caller's own under up,
    # which turns them on; never the gateway's (its pods' files are not the caller's, see
    # check_uri), so off unless an actuator says so
    file_uris: bool = False


def arn(defaults: Defaults, resource: str, name: str) -> str:
    """The platform's ARN spells names in lower case."""
    return f"arn:aws:sagemaker:{defaults.region}:{defaults.account}:{resource}/{object_name(name)}"


def check_name(field: str, name: Any, kubernetes: bool = False) -> str:
    """A platform name; an endpoint's or job's must also make a Kubernetes name when lower
    cased (a letter first, at most 50 characters). Absent (or null): required."""
    if name is None:
        raise ValidationException(f"{field} is required")
    if (
        not isinstance(name, str)
        or len(name) > MAX_PLATFORM_NAME
        or not PLATFORM_NAME.fullmatch(name)
    ):
        raise ValidationException(
            f"{field} {shown(name)} must be 1 to 63 letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    if kubernetes and not is_endpoint_name(object_name(name)):
        raise ValidationException(
            f"{field} {shown(name)}: infermodes names endpoints and transform jobs as Kubernetes "
            f"objects: it must start with a letter and have at most {MAX_NAME_LENGTH} characters"
        )
    return name


def check_uri(field: str, uri: Any, defaults: Defaults, one_object: bool = False) -> None:
    """An ``s3://bucket/...`` URI, or ``file:///...`` where ``defaults.file_uris`` allows it;
    with a key, not a folder, when it names ``one_object`` (a prefix may be a whole bucket). On
    Kubernetes a file URI would have the cluster's pods read and write their own files (the
    service-account token, ``/proc/self/environ`` with the storage keys) for whoever calls the
    API, and failure reasons quote pieces of what was read."""
    try:
        usable = (  # the spec's pattern: no control character (a NUL no path can hold)
            isinstance(uri, str) and len(uri) <= MAX_URI and re.fullmatch(STORAGE_PREFIX, uri)
        )
        ref = parse_uri(uri) if usable else None
    except StorageError:  # its message quotes the whole URI
        raise ValidationException(
            f"{field} {shown(uri)} is not an s3://bucket/key or file:///path URI"
        ) from None
    if ref is None or (ref.scheme == "file" and not defaults.file_uris):
        raise ValidationException(
            f"{field} must be an s3://bucket/key URI"
            f"{' (or file:///path)' if defaults.file_uris else ''} of at most {MAX_URI} "
            f"characters, got {shown(uri)}"
        )
    if one_object and (not ref.key.strip("/") or uri.endswith("/")):
        raise ValidationException(f"{field} {shown(uri)} names no object: s3://bucket/key")


def only(where: str, given: Mapping[str, Any], supported: set[str]) -> None:
    """Refuse members we do not translate, naming the first."""
    for key in sorted(given):
        if key not in supported and given[key] not in (None, [], {}):
            raise ValidationException(f"{where}{key} is not supported by infermodes")


def integer(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationException(f"{where} must be an integer, got {shown(value)}")
    return value


def mapping(where: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationException(f"{where} must be a structure")
    return value


# records
def model_record(request: JsonObject, defaults: Defaults) -> JsonObject:
    """CreateModel: one XGBoost container with a ModelDataUrl."""
    name = check_name("ModelName", request.get("ModelName"))
    only("", request, {"ModelName", "PrimaryContainer", "Containers", "ExecutionRoleArn", "Tags",
                       "EnableNetworkIsolation"})  # fmt: skip
    if request.get("EnableNetworkIsolation"):
        raise ValidationException("EnableNetworkIsolation is not supported by infermodes")
    check_common(request)
    containers = request.get("Containers") or []
    if not isinstance(containers, list):
        raise ValidationException("Containers must be a list")
    primary = request.get("PrimaryContainer") is not None
    if primary and containers:
        raise ValidationException("give PrimaryContainer or Containers, not both")
    if len(containers) > 1:
        raise ValidationException(
            "Containers: inference pipelines (more than one container) are not supported by "
            "infermodes"
        )
    if not primary and not containers:
        raise ValidationException("PrimaryContainer is required (or Containers, of one)")
    field = "PrimaryContainer" if primary else "Containers[0]"
    given = request.get("PrimaryContainer") if primary else containers[0]
    check_container(f"{field}.", mapping(field, given), defaults)
    return {**request, "ModelArn": arn(defaults, "model", name), "CreationTime": time.time()}


SPOKEN_TYPES = {str: "a string", int: "an integer", float: "a number"}


def required(where: str, given: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse a structure without the members the platform's model requires, naming the
    first missing (boto3 checks this on its side; a raw request may not)."""
    for key in keys:
        if given.get(key) is None:
            raise ValidationException(f"{where}{key} is required")


def typed(where: str, given: Mapping[str, Any], types: Mapping[str, type]) -> None:
    """Members we keep and answer back (Describe) without translating them: typed as the
    platform's model types them, so a kept request can always be answered."""
    for key, kind in types.items():
        value = given.get(key)
        wanted = (int, float) if kind is float else kind
        if value is not None and (isinstance(value, bool) or not isinstance(value, wanted)):
            raise ValidationException(
                f"{where}{key} must be {SPOKEN_TYPES[kind]}, got {shown(value)}"
            )


MAX_TAGS = 50  # the platform's limits: tags per resource, and a key's and a value's length
MAX_TAG_KEY, MAX_TAG_VALUE = 128, 256
# the platform's instance types are ml.<family>.<size>; which of them exist is its business
INSTANCE_TYPE = re.compile(r"ml\.[a-z0-9-]+\.[a-z0-9-]+")


def check_common(request: JsonObject) -> None:
    """The members every create shares that we keep but do not translate."""
    typed("", request, {"ExecutionRoleArn": str})
    check_tags(request.get("Tags"))


def check_tags(tags: Any) -> None:
    if tags is None:
        return
    if not (isinstance(tags, list) and all(
            isinstance(t, dict) and isinstance(t.get("Key"), str)
            and isinstance(t.get("Value", ""), str) for t in tags)):  # fmt: skip
        raise ValidationException("Tags must be a list of {Key, Value} structures")
    if len(tags) > MAX_TAGS:
        raise ValidationException(f"Tags: at most {MAX_TAGS} tags, got {len(tags)}")
    seen: set[str] = set()
    for tag in tags:
        key, value = tag["Key"], tag.get("Value", "")
        if not 1 <= len(key) <= MAX_TAG_KEY:
            raise ValidationException(
                f"Tags: a key has 1 to {MAX_TAG_KEY} characters, got {shown(key)}"
            )
        if len(value) > MAX_TAG_VALUE:
            raise ValidationException(
                f"Tags: a value has at most {MAX_TAG_VALUE} characters; the value of {shown(key)} "
                f"has {len(value)}"
            )
        if key in seen:
            raise ValidationException(f"Tags: the key {shown(key)} is given twice")
        seen.add(key)


def check_instance_type(field: str, value: Any) -> None:
    if isinstance(value, str) and not INSTANCE_TYPE.fullmatch(value):
        raise ValidationException(
            f"{field} {shown(value)} is not an instance type: ml.<family>.<size>"
        )


def check_container(field: str, container: Mapping[str, Any], defaults: Defaults) -> None:
    only(field, container, {"ContainerHostname", "Image", "Mode", "ModelDataUrl", "Environment"})
    typed(field, container, {"ContainerHostname": str, "Image": str})
    if container.get("Mode", "SingleModel") != "SingleModel":
        raise ValidationException(
            f"{field}Mode {shown(container['Mode'])}: only SingleModel is supported by infermodes"
        )
    url = container.get("ModelDataUrl")
    if url is None:
        raise ValidationException(
            f"{field}ModelDataUrl is required: the s3:// URI of the model.tar.gz (or XGBoost "
            "model file)"
        )
    check_uri(f"{field}ModelDataUrl", url, defaults, one_object=True)
    image = container.get("Image")
    if image is not None and not XGBOOST_IMAGE.search(str(image)):
        raise ValidationException(
            f"{field}Image {shown(image)} is not an XGBoost image: infermodes serves XGBoost "
            "models with its own model server (give the platform's xgboost or sagemaker-xgboost "
            "image, or no Image)"
        )
    environment = mapping(f"{field}Environment", container.get("Environment"))
    typed(f"{field}Environment.", environment, dict.fromkeys(environment, str))
    for key, value in environment.items():
        if key not in IGNORED_ENVIRONMENT and key != INFERENCE_OUTPUT:
            raise ValidationException(
                f"{field}Environment {shown(key)} is not supported by infermodes (only "
                f"{INFERENCE_OUTPUT} and {', '.join(sorted(IGNORED_ENVIRONMENT))})"
            )
        if isinstance(value, str) and len(value) > MAX_ENVIRONMENT_VALUE:
            raise ValidationException(
                f"{field}Environment {key}: a value has at most {MAX_ENVIRONMENT_VALUE} "
                f"characters, got {len(value)}"
            )


def primary_container(model: JsonObject) -> Mapping[str, Any]:
    found: Mapping[str, Any] = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
    return found


VARIANT_FIELDS = {
    "VariantName", "ModelName", "InitialInstanceCount", "InstanceType", "InitialVariantWeight",
    "ServerlessConfig", "VolumeSizeInGB", "ModelDataDownloadTimeoutInSeconds",
    "ContainerStartupHealthCheckTimeoutInSeconds", "ManagedInstanceScaling",
}  # fmt: skip


VARIANT_TYPES = {
    "InstanceType": str, "InitialVariantWeight": float, "VolumeSizeInGB": int,
    "ModelDataDownloadTimeoutInSeconds": int, "ContainerStartupHealthCheckTimeoutInSeconds": int,
    "InitialInstanceCount": int,
}  # fmt: skip
# translated members, typed as the platform's model types them: the spec's schema would take
# "4" for 4, but the request is kept and answered back as sent
SERVERLESS_TYPES = {"MemorySizeInMB": int, "MaxConcurrency": int, "ProvisionedConcurrency": int}
SCALING_TYPES = {"MinInstanceCount": int, "MaxInstanceCount": int}
# what only a variant on instances has (a serverless one given any of them is a mix)
INSTANCE_FIELDS = ("InstanceType", "InitialInstanceCount", "ManagedInstanceScaling")
SCALING_STATUSES = ("ENABLED", "DISABLED")  # the platform's enum, spelled as it is


def check_provisioned(where: str, serverless_config: Mapping[str, Any]) -> None:
    """The platform's ProvisionedConcurrency is 1 or more (none is said by leaving it out),
    where the spec's lower bound is 0, its "none"; the upper bounds are the spec's."""
    provisioned = serverless_config.get("ProvisionedConcurrency")
    if provisioned is not None and provisioned < 1:
        raise ValidationException(
            f"{where}ProvisionedConcurrency must be 1 or more, got {provisioned} (leave it out "
            "to keep none warm)"
        )


def endpoint_config_record(
    request: JsonObject, models: Mapping[str, JsonObject | None], defaults: Defaults
) -> JsonObject:
    """CreateEndpointConfig: one production variant of a model that exists (``models``: the
    records of the names the variants give, None where there is none)."""
    name = check_name("EndpointConfigName", request.get("EndpointConfigName"))
    only("", request, {"EndpointConfigName", "ProductionVariants", "AsyncInferenceConfig",
                       "Tags", "ExecutionRoleArn", "EnableNetworkIsolation"})  # fmt: skip
    check_common(request)
    variants = request.get("ProductionVariants") or []
    if not isinstance(variants, list) or len(variants) != 1:
        raise ValidationException(
            "ProductionVariants: infermodes runs exactly one production variant per endpoint, "
            f"got {len(variants) if isinstance(variants, list) else repr(variants)}"
        )
    variant = mapping("ProductionVariants[0]", variants[0])
    field = "ProductionVariants[0]."
    only(field, variant, VARIANT_FIELDS)
    check_name(f"{field}VariantName", variant.get("VariantName"))
    typed(field, variant, VARIANT_TYPES)
    if (variant.get("InitialVariantWeight") or 0) < 0:
        raise ValidationException(f"{field}InitialVariantWeight must be 0 or more")
    required(field, variant, ("ModelName",))
    typed(field, variant, {"ModelName": str})
    model_name = variant["ModelName"]
    if models.get(model_name) is None:
        raise ValidationException(
            f'Could not find model "{arn(defaults, "model", str(model_name))}".'
        )
    serverless = variant.get("ServerlessConfig") is not None
    # given at all, 0 too: a count beside a ServerlessConfig is a mix, not nothing
    instanced = [k for k in INSTANCE_FIELDS if variant.get(k) is not None]
    sizing = [k for k in instanced if k != "ManagedInstanceScaling"]
    if serverless and instanced:
        raise ValidationException(
            f"{field}{instanced[0]}: a serverless variant (ServerlessConfig) has no instances; "
            "give either ServerlessConfig or InstanceType and InitialInstanceCount"
        )
    if not serverless and not sizing:
        raise ValidationException(
            "ProductionVariants[0]: give either ServerlessConfig or InstanceType and "
            "InitialInstanceCount"
        )
    if len(sizing) == 1:
        raise ValidationException(
            "ProductionVariants[0]: InstanceType and InitialInstanceCount go together"
        )
    if not serverless and variant["InitialInstanceCount"] < 1:
        raise ValidationException(
            f"{field}InitialInstanceCount must be 1 or more, got {variant['InitialInstanceCount']}"
        )
    check_instance_type("ProductionVariants[0].InstanceType", variant.get("InstanceType"))
    if serverless and request.get("AsyncInferenceConfig") is not None:
        raise ValidationException(
            "AsyncInferenceConfig: an asynchronous endpoint runs on instances, not serverless"
        )
    serverless_config = mapping(f"{field}ServerlessConfig", variant.get("ServerlessConfig"))
    only(f"{field}ServerlessConfig.", serverless_config, set(SERVERLESS_TYPES))
    if serverless:
        required(
            f"{field}ServerlessConfig.", serverless_config, ("MemorySizeInMB", "MaxConcurrency")
        )
    typed(f"{field}ServerlessConfig.", serverless_config, SERVERLESS_TYPES)
    check_provisioned(f"{field}ServerlessConfig.", serverless_config)
    scaling = mapping(f"{field}ManagedInstanceScaling", variant.get("ManagedInstanceScaling"))
    only(f"{field}ManagedInstanceScaling.", scaling, {"Status", *SCALING_TYPES})
    typed(f"{field}ManagedInstanceScaling.", scaling, SCALING_TYPES)
    status = scaling.get("Status")
    if status is not None and status not in SCALING_STATUSES:
        # read as DISABLED, its counts would be dropped without a word (boto3 sends any string)
        raise ValidationException(
            f"{field}ManagedInstanceScaling.Status {shown(status)}: one of "
            f"{', '.join(SCALING_STATUSES)}"
        )
    check_counts(field, variant.get("InitialInstanceCount"), scaling)
    if request.get("AsyncInferenceConfig") is not None:
        check_async(mapping("AsyncInferenceConfig", request["AsyncInferenceConfig"]), defaults)
    record = {**request, "EndpointConfigArn": arn(defaults, "endpoint-config", name),
              "CreationTime": time.time()}  # fmt: skip
    endpoint_spec(record, models[model_name] or {}, defaults)  # everything the spec checks too
    return record


def check_counts(field: str, initial: int | None, scaling: Mapping[str, Any]) -> None:
    """ManagedInstanceScaling's counts in the platform's ranges whatever its status (they are
    kept and answered back), and, ENABLED, an InitialInstanceCount within them: the endpoint
    runs the managed range, so a count outside it would be dropped without a word."""
    where = f"{field}ManagedInstanceScaling"
    low, high = scaling.get("MinInstanceCount"), scaling.get("MaxInstanceCount")
    for key, value, least in (("MinInstanceCount", low, 0), ("MaxInstanceCount", high, 1)):
        if value is not None and value < least:
            raise ValidationException(f"{where}.{key} must be {least} or more, got {value}")
    if low is not None and high is not None and low > high:
        raise ValidationException(f"{where}: {PLATFORM_WORDING[REPLICA_RANGE]}")
    if scaling.get("Status") != "ENABLED" or initial is None:
        return
    if (low is not None and initial < low) or (high is not None and initial > high):
        given = ", ".join(f"{key} {value}" for key, value in
                          (("MinInstanceCount", low), ("MaxInstanceCount", high))
                          if value is not None)  # fmt: skip
        raise ValidationException(
            f"{field}InitialInstanceCount {initial} lies outside ManagedInstanceScaling's "
            f"range ({given}): give an InitialInstanceCount within it"
        )


# the platform's own pattern for NotificationConfig's SuccessTopic and ErrorTopic
SNS_TOPIC = r"arn:aws[a-z-]*:sns:[a-z0-9-]*:[0-9]{12}:[a-zA-Z0-9_.-]+"


def check_async(config: Mapping[str, Any], defaults: Defaults) -> None:
    only("AsyncInferenceConfig.", config, {"ClientConfig", "OutputConfig"})
    client = mapping("ClientConfig", config.get("ClientConfig"))
    only("AsyncInferenceConfig.ClientConfig.", client, {"MaxConcurrentInvocationsPerInstance"})
    typed(
        "AsyncInferenceConfig.ClientConfig.", client, {"MaxConcurrentInvocationsPerInstance": int}
    )
    output = mapping("OutputConfig", config.get("OutputConfig"))
    only("AsyncInferenceConfig.OutputConfig.", output,
         {"S3OutputPath", "S3FailurePath", "NotificationConfig"})  # fmt: skip
    if not output.get("S3OutputPath"):
        raise ValidationException("AsyncInferenceConfig.OutputConfig.S3OutputPath is required")
    for key in ("S3OutputPath", "S3FailurePath"):
        if output.get(key) is not None:
            check_uri(f"AsyncInferenceConfig.OutputConfig.{key}", output[key], defaults)
    notification = mapping(
        "AsyncInferenceConfig.OutputConfig.NotificationConfig", output.get("NotificationConfig")
    )
    where = "AsyncInferenceConfig.OutputConfig.NotificationConfig."
    only(where, notification, {"SuccessTopic", "ErrorTopic"})
    typed(where, notification, {"SuccessTopic": str, "ErrorTopic": str})
    for key in ("SuccessTopic", "ErrorTopic"):
        topic = notification.get(key)
        if topic is not None and not names_webhook(topic) and not re.fullmatch(SNS_TOPIC, topic):
            # kept unread, it would be echoed by DescribeEndpoint, and nothing ever sent to it;
            # not repeated (a URL mistyped may hold a token)
            raise ValidationException(
                f"{where}{key}: must be an SNS topic ARN (arn:<partition>:sns:<region>:"
                "<12-digit account>:<name>), announced on the topic exchange, or an http:// "
                "or https:// URL, the webhook"
            )


# objects
# the spec's cross-field rules as the platform's caller wrote the fields (the replica range is
# only ever broken by ManagedInstanceScaling: InitialInstanceCount gives min = max)
PLATFORM_WORDING = {
    REPLICA_RANGE: "MinInstanceCount must not exceed MaxInstanceCount",
    INITIAL_WITHIN_RANGE: "InitialInstanceCount must lie within ManagedInstanceScaling's "
    "MinInstanceCount..MaxInstanceCount",
    PROVISIONED_WITHIN_MAX: "ProvisionedConcurrency must not exceed MaxConcurrency",
    PAYLOAD_RULE: "MaxPayloadInMB x MaxConcurrentTransforms must not exceed 100",
    LIBSVM_PROCESSING: "DataProcessing.InputFilter and DataProcessing.JoinSource need CSV or "
    "JSON input (TransformInput.ContentType), not libsvm",
    JOIN_LIKE_WITH_LIKE: "DataProcessing.JoinSource Input joins like with like: CSV input "
    "(TransformInput.ContentType) needs TransformOutput.Accept text/csv, JSON input "
    "application/json or application/jsonlines",
    INPUT_INSIDE_OUTPUT: "TransformInput.DataSource.S3DataSource.S3Uri lies inside "
    "TransformOutput.S3OutputPath (or is it): what lies under the output is never read as "
    "input, so no input would be left; give the outputs a prefix of their own (it may lie "
    "inside the input's)",
}


def _validated(spec: JsonObject, origins: Mapping[str, str]) -> JsonObject:
    """The spec as our schema accepts it; a refusal names the platform's field it came from,
    and says a rule across fields in the platform's names."""
    try:
        EndpointSpec.model_validate(spec)
    except ValidationError as exc:

        def field(path: str) -> str:
            return next((origins[p] for p in sorted(origins, key=len, reverse=True)
                         if path == p or path.startswith(p + ".")), f"spec.{path}")  # fmt: skip

        raise ValidationException(spec_problems(exc, field, PLATFORM_WORDING)) from None
    return spec


def _model_block(model: Mapping[str, Any], served: bool) -> tuple[JsonObject, str | None]:
    """``spec.model`` and the image the request named."""
    container = primary_container(dict(model))
    block: JsonObject = {"uri": container.get("ModelDataUrl")}
    output = (container.get("Environment") or {}).get(INFERENCE_OUTPUT)
    if output is not None:
        if not served:
            raise ValidationException(
                f"Environment {INFERENCE_OUTPUT}: only realtime and serverless endpoints select "
                "outputs (async and batch write the model's scores)"
            )
        block["inferenceOutput"] = output
    image = container.get("Image")
    return block, (str(image) if image is not None else None)


def _object(
    name: str, kind: str, spec: JsonObject, annotations: JsonObject, defaults: Defaults
) -> JsonObject:
    if defaults.storage_secret:
        spec["storageSecretRef"] = {"name": defaults.storage_secret}
    metadata: JsonObject = {
        "name": object_name(name),
        "labels": {KIND_LABEL: kind},
        "annotations": {NAME_ANNOTATION: name, MODIFIED_ANNOTATION: str(time.time()),
                        **annotations},
    }  # fmt: skip
    size = sum(len(key) + len(value.encode()) for key, value in metadata["annotations"].items())
    if size > MAX_ANNOTATIONS:
        raise ValidationException(
            f"the request is too large to keep: {size} bytes of it to keep, at most "
            f"{MAX_ANNOTATIONS} (its strings are longer than the platform allows)"
        )
    if defaults.namespace:
        metadata["namespace"] = defaults.namespace
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata, "spec": spec}


SERVERLESS_FIELDS = (
    ("memorySizeInMB", "MemorySizeInMB"),
    ("maxConcurrency", "MaxConcurrency"),
    ("provisionedConcurrency", "ProvisionedConcurrency"),
)


def endpoint_spec(config: JsonObject, model: JsonObject, defaults: Defaults) -> JsonObject:
    """The InferenceEndpoint spec of an endpoint config's one variant."""
    variant = config["ProductionVariants"][0]
    field = "ProductionVariants[0]."
    origins = {
        "model.uri": "PrimaryContainer.ModelDataUrl",
        "model.inferenceOutput": f"PrimaryContainer.Environment.{INFERENCE_OUTPUT}",
    }
    async_config = config.get("AsyncInferenceConfig")
    serverless = variant.get("ServerlessConfig")
    block, _ = _model_block(model, served=async_config is None)
    spec: JsonObject = {"model": block}
    if serverless is not None:
        spec["mode"] = "serverless"
        spec["serverless"] = {}
        for key, name in SERVERLESS_FIELDS:
            if name in serverless:
                spec["serverless"][key] = serverless[name]
            origins[f"serverless.{key}"] = f"{field}ServerlessConfig.{name}"
        origins["serverless"] = f"{field}ServerlessConfig"
        return _validated(spec, origins)
    count = integer(f"{field}InitialInstanceCount", variant["InitialInstanceCount"])
    scaling = variant.get("ManagedInstanceScaling") or {}
    low, high = count, count
    if scaling.get("Status") == "ENABLED":
        where = f"{field}ManagedInstanceScaling."
        low = integer(f"{where}MinInstanceCount", scaling.get("MinInstanceCount", count))
        high = integer(f"{where}MaxInstanceCount", scaling.get("MaxInstanceCount", max(count, low)))
    managed = scaling.get("Status") == "ENABLED"
    scaled = "ManagedInstanceScaling" if managed else "InitialInstanceCount"
    block_name = "realtime" if async_config is None else "async"
    origins[block_name] = f"{field}{scaled}"
    for key, member in (("minReplicas", "MinInstanceCount"), ("maxReplicas", "MaxInstanceCount")):
        origins[f"{block_name}.{key}"] = (
            f"{field}ManagedInstanceScaling.{member}" if managed else f"{field}{scaled}"
        )
    replicas: JsonObject = {"minReplicas": low, "maxReplicas": high}
    if managed:  # the platform starts the variant at its InitialInstanceCount
        replicas["initialReplicas"] = count
        origins[f"{block_name}.initialReplicas"] = f"{field}InitialInstanceCount"
    if async_config is None:
        spec["mode"] = "realtime"
        spec["realtime"] = replicas
        return _validated(spec, origins)
    output = async_config["OutputConfig"]
    notify = output.get("NotificationConfig") or {}
    notifications = "AsyncInferenceConfig.OutputConfig.NotificationConfig."
    notification: JsonObject = {"topic": True}
    for key, name in (("successWebhook", "SuccessTopic"), ("errorWebhook", "ErrorTopic")):
        topic = notify.get(name)
        if isinstance(topic, str) and names_webhook(topic):
            notification[key] = topic  # an SNS topic ARN is announced on our topic exchange
    block_async: JsonObject = {
        "outputPath": output["S3OutputPath"],
        **replicas,
        "notification": notification,
    }
    if output.get("S3FailurePath"):
        block_async["failurePath"] = output["S3FailurePath"]
    client = async_config.get("ClientConfig") or {}
    if "MaxConcurrentInvocationsPerInstance" in client:
        block_async["maxConcurrentInvocationsPerInstance"] = client[
            "MaxConcurrentInvocationsPerInstance"
        ]
    if defaults.broker_secret:
        block_async["brokerSecretRef"] = {"name": defaults.broker_secret}
    spec["mode"] = "async"
    spec["async"] = block_async
    origins.update({
        "async.outputPath": "AsyncInferenceConfig.OutputConfig.S3OutputPath",
        "async.failurePath": "AsyncInferenceConfig.OutputConfig.S3FailurePath",
        "async.maxConcurrentInvocationsPerInstance":
            "AsyncInferenceConfig.ClientConfig.MaxConcurrentInvocationsPerInstance",
        "async.notification.successWebhook": f"{notifications}SuccessTopic",
        "async.notification.errorWebhook": f"{notifications}ErrorTopic",
    })  # fmt: skip
    return _validated(spec, origins)


def variant_of(annotations: Mapping[str, Any]) -> str | None:
    """The production variant an endpoint the API made has (None: not the API's, or an
    annotation set by hand that is no variant name: it goes into a header, which may not hold
    anything); from the request it keeps when made before the variant had an annotation of
    its own."""
    variant = annotations.get(VARIANT_ANNOTATION)
    if variant is None and REQUEST_ANNOTATION in annotations:
        try:
            variant = json.loads(annotations[REQUEST_ANNOTATION])["ProductionVariants"][0][
                "VariantName"
            ]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
    if not isinstance(variant, str) or len(variant) > MAX_PLATFORM_NAME:
        return None
    return variant if PLATFORM_NAME.fullmatch(variant) else None


def endpoint_object(
    name: str, config: JsonObject, model: JsonObject, defaults: Defaults
) -> JsonObject:
    """CreateEndpoint / UpdateEndpoint: the InferenceEndpoint of ``config``'s variant."""
    spec = endpoint_spec(config, model, defaults)
    _, image = _model_block(model, served=spec["mode"] != "async")
    described = {
        "EndpointConfigName": config["EndpointConfigName"],
        "ProductionVariants": config["ProductionVariants"],
        "AsyncInferenceConfig": config.get("AsyncInferenceConfig"),
        "Image": image,
        "EndpointArn": arn(defaults, "endpoint", name),
    }
    annotations = {
        REQUEST_ANNOTATION: json.dumps({k: v for k, v in described.items() if v}),
        VARIANT_ANNOTATION: config["ProductionVariants"][0]["VariantName"],
    }
    return _object(name, ENDPOINT, spec, annotations, defaults)


TRANSFORM_FIELDS = {
    "TransformJobName", "ModelName", "MaxConcurrentTransforms", "ModelClientConfig",
    "MaxPayloadInMB", "BatchStrategy", "TransformInput", "TransformOutput", "TransformResources",
    "DataProcessing", "Tags", "Environment",
}  # fmt: skip


def transform_object(
    request: JsonObject, model: JsonObject | None, defaults: Defaults
) -> JsonObject:
    """CreateTransformJob: a batch InferenceEndpoint with every field ``BatchSpec`` has."""
    name = check_name("TransformJobName", request.get("TransformJobName"), kubernetes=True)
    only("", request, TRANSFORM_FIELDS)
    check_tags(request.get("Tags"))
    if model is None:
        raise ValidationException(
            f'Could not find model "{arn(defaults, "model", str(request.get("ModelName")))}".'
        )
    for key in mapping("Environment", request.get("Environment")):
        raise ValidationException(f"Environment {shown(key)} is not supported by infermodes")
    # the numbers as boto3's model types them: our schema would read "6" or true as a number
    typed("", request, {"MaxPayloadInMB": int, "MaxConcurrentTransforms": int})
    source = mapping("TransformInput", request.get("TransformInput"))
    only("TransformInput.", source, {"DataSource", "ContentType", "CompressionType", "SplitType"})
    data_source = mapping("TransformInput.DataSource", source.get("DataSource"))
    only("TransformInput.DataSource.", data_source, {"S3DataSource"})
    s3 = mapping("TransformInput.DataSource.S3DataSource", data_source.get("S3DataSource"))
    only("TransformInput.DataSource.S3DataSource.", s3, {"S3DataType", "S3Uri"})
    output = mapping("TransformOutput", request.get("TransformOutput"))
    only("TransformOutput.", output, {"S3OutputPath", "Accept", "AssembleWith"})
    for where, uri in (("TransformInput.DataSource.S3DataSource.S3Uri", s3.get("S3Uri")),
                       ("TransformOutput.S3OutputPath", output.get("S3OutputPath"))):  # fmt: skip
        if uri is not None:  # missing: the spec names it
            check_uri(where, uri, defaults)
    required("", request, ("TransformResources",))
    resources = mapping("TransformResources", request.get("TransformResources"))
    only("TransformResources.", resources, {"InstanceType", "InstanceCount"})
    required("TransformResources.", resources, ("InstanceType", "InstanceCount"))
    typed("TransformResources.", resources, {"InstanceType": str, "InstanceCount": int})
    check_instance_type("TransformResources.InstanceType", resources.get("InstanceType"))
    client = mapping("ModelClientConfig", request.get("ModelClientConfig"))
    only("ModelClientConfig.", client, {"InvocationsTimeoutInSeconds", "InvocationsMaxRetries"})
    typed("ModelClientConfig.", client, {"InvocationsTimeoutInSeconds": int,
                                         "InvocationsMaxRetries": int})  # fmt: skip
    processing = mapping("DataProcessing", request.get("DataProcessing"))
    only("DataProcessing.", processing, {"InputFilter", "OutputFilter", "JoinSource"})
    pairs: list[tuple[JsonObject, str, Mapping[str, Any], str, str]] = []
    # SplitType's and AssembleWith's defaults are the platform's, None (an object per request;
    # outputs as they are), not our spec's Line, which an applied manifest keeps
    batch_input: JsonObject = {
        "uri": s3.get("S3Uri"),
        "dataType": s3.get("S3DataType"),
        "splitType": "None",
    }
    batch_output: JsonObject = {"uri": output.get("S3OutputPath"), "assembleWith": "None"}
    batch: JsonObject = {"input": batch_input, "output": batch_output}
    processing_block: JsonObject = {}
    pairs += [
        (batch_input, "contentType", source, "ContentType", "TransformInput."),
        (batch_input, "compressionType", source, "CompressionType", "TransformInput."),
        (batch_input, "splitType", source, "SplitType", "TransformInput."),
        (batch_output, "accept", output, "Accept", "TransformOutput."),
        (batch_output, "assembleWith", output, "AssembleWith", "TransformOutput."),
        (batch, "instanceCount", resources, "InstanceCount", "TransformResources."),
        (batch, "maxPayloadInMB", request, "MaxPayloadInMB", ""),
        (batch, "batchStrategy", request, "BatchStrategy", ""),
        (batch, "invocationsMaxRetries", client, "InvocationsMaxRetries", "ModelClientConfig."),
        (batch, "invocationsTimeoutInSeconds", client, "InvocationsTimeoutInSeconds",
         "ModelClientConfig."),
        (processing_block, "inputFilter", processing, "InputFilter", "DataProcessing."),
        (processing_block, "outputFilter", processing, "OutputFilter", "DataProcessing."),
        (processing_block, "joinSource", processing, "JoinSource", "DataProcessing."),
    ]  # fmt: skip
    if request.get("MaxConcurrentTransforms"):  # 0: the platform picks; here the default
        pairs.append((batch, "maxConcurrentTransforms", request, "MaxConcurrentTransforms", ""))
    origins = {
        "batch.input.uri": "TransformInput.DataSource.S3DataSource.S3Uri",
        "batch.input.dataType": "TransformInput.DataSource.S3DataSource.S3DataType",
        "batch.output.uri": "TransformOutput.S3OutputPath",
        "batch": "TransformJob",  # the batch block's own rules: the message names the fields
        "model.uri": "the model's ModelDataUrl",
    }
    prefixes = {id(batch): "batch.", id(batch_input): "batch.input.",
                id(batch_output): "batch.output.",
                id(processing_block): "batch.dataProcessing."}  # fmt: skip
    for target, key, given, name_, where in pairs:
        if given.get(name_) is not None:
            target[key] = given[name_]
        origins[prefixes[id(target)] + key] = where + name_
    if processing_block:
        batch["dataProcessing"] = processing_block
    block, image = _model_block(model, served=False)
    spec = _validated({"mode": "batch", "model": block, "batch": batch}, origins)
    described = {k: v for k, v in request.items() if k not in ("Tags",) and v is not None} | {
        "TransformJobArn": arn(defaults, "transform-job", name),
        "Image": image,
    }
    annotations = {REQUEST_ANNOTATION: json.dumps(described)}
    return _object(name, TRANSFORM_JOB, spec, annotations, defaults)
