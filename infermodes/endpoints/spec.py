"""The InferenceEndpoint resource as pydantic models: the one source of the CRD's schema.

``crd.py`` turns these models into the CRD's OpenAPI schema, so ``kubectl apply`` rejects what
these models reject wherever a schema can say it; the operator validates again with the same
models and reports what only code can check as ``phase: Failed`` with a reason.
Limits follow the managed platform (serverless memory 1024..6144 MB in steps of 1024, at most 200
concurrent invocations, async invocation timeout at most 3600 s, batch payloads at most 100 MB
and payload x concurrent transforms at most 100 MB, at most 3 retries per mini-batch).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal, localcontext
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from infermodes import media
from infermodes.destinations import (
    LITERAL_LINK_LOCAL_CEL,
    PORT_OUT_OF_RANGE,
    WEBHOOK_MAX_LENGTH,
    WEBHOOK_PATTERN,
    address_cel,
    bracket_cel,
    literal_refusal,
    number_cel,
    port_refusal,
)
from infermodes.errors import StorageError, shown
from infermodes.jsonpath import GRAMMAR, JsonPath
from infermodes.settings import (
    CONTROL,
    DEFAULT_MAX_ATTEMPTS,
    JOIN_LIKE_WITH_LIKE,
    LIBSVM_PROCESSING,
    MAX_CONCURRENT_TRANSFORMS,
    MAX_INVOCATION_RETRIES,
    MAX_INVOCATION_TIMEOUT_SECONDS,
    MAX_PAYLOAD_MB,
    PAYLOAD_RULE,
    SPACE,
    STORAGE_PREFIX,
    AssembleWith,
    BatchAcceptHeader,
    BatchContentTypeHeader,
    BatchDataType,
    BatchStrategy,
    CompressionType,
    JoinSource,
    SplitType,
    check_batch_payload,
    check_batch_processing,
)
from infermodes.storage import dot_segment, parse_uri, prefix_within

GROUP = "infermodes.dev"
VERSION = "v1alpha1"
KIND = "InferenceEndpoint"
# the label the platform API puts on what it makes (platform/translate.py), and its value on
# a transform job: the actuators read it too (``status.batch_output_released``)
PLATFORM_KIND_LABEL = "platform.infermodes.dev/kind"
PLATFORM_TRANSFORM_JOB = "TransformJob"
PLURAL = "inferenceendpoints"
SHORT_NAME = "ie"
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH = 50  # leaves room for suffixes in the names of the objects we create


def is_endpoint_name(name: str) -> bool:
    """Whether the CRD takes ``name`` for ``metadata.name``: a DNS-1035 label of at most
    ``MAX_NAME_LENGTH`` characters (no ``..``, ``/`` or upper case: names become paths)."""
    return len(name) <= MAX_NAME_LENGTH and re.fullmatch(NAME_PATTERN, name) is not None


# what Kubernetes takes for a Secret's name (a DNS subdomain) and for one of its keys: the
# API server refuses a workload naming any other, after kubectl apply took the endpoint
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
MAX_SUBDOMAIN_LENGTH = 253
SecretName = Annotated[
    str,
    Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=MAX_SUBDOMAIN_LENGTH,
          description="A Secret in the endpoint's namespace."),
]  # fmt: skip
SecretKey = Annotated[str, Field(pattern=CONFIG_KEY_PATTERN, max_length=MAX_SUBDOMAIN_LENGTH)]


ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def object_name(name: str) -> str:
    """The InferenceEndpoint (or record) a name means: the managed platform's names may carry
    upper case, a Kubernetes name does not, so names differing only in case are one object.
    The platform API, the stores and both invocation routes all name objects through here.
    ASCII letters only: Unicode's lower case maps the Kelvin sign to 'k', which would let a
    name no API accepts reach an endpoint."""
    return name.translate(ASCII_LOWER)


# Kubernetes' quantity grammar (apimachinery's resource.Quantity), above zero (none: a pod of
# no CPU or memory): a number ("1", "1.5", "1.", ".5", an optional "+"), then a binary suffix
# (Ki..Ei), a decimal one (n u m "" k M G T P E) or a decimal exponent (e or E and a whole
# number: "1e3" is 1000, "1E3" too, "1E" is an exa). The exponent's 18 digits at most stand for
# Kubernetes' int64; any quantity past int64 is capped, as Kubernetes caps it.
QUANTITY_PATTERN = (
    r"^\+?([0-9]*[1-9][0-9]*(?:\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)"  # 1: the number
    r"(?:([KMGTPE]i|[numkMGTPE])|[eE]([-+]?[0-9]{1,18}))?$"  # 2: a unit, or 3: an exponent
)


def quantity_text(value: object) -> object:
    """A whole number as its text: ``cpu: 2`` reaches the API as the integer 2, and the CRD takes
    an integer or a string, as a pod's resources do (a fraction must be quoted there too)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


MAX_BYTES = 2**63 - 1
QUANTITY_FACTORS: dict[str, Decimal | int] = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("0.001"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
# a quantity whose leading digit is this many places from the point is surely past int64 (or
# below one byte): 10**30 bytes; sizes in between are computed exactly
QUANTITY_MAGNITUDE = 30


def quantity_bytes(quantity: str) -> int:
    """A memory quantity in whole bytes, rounded up as the kubelet rounds a limit: the memory a
    process may use, which both actuators hand it from the spec (``resources.memory``)."""
    match = re.fullmatch(QUANTITY_PATTERN, quantity)
    if match is None:
        raise ValueError(f"not a quantity: {quantity!r}")
    number, unit, exponent = Decimal(match[1]), match[2] or "", int(match[3] or 0)
    # an exponent of 18 digits is past what Decimal computes in: its magnitude decides first
    magnitude = number.adjusted() + exponent
    if magnitude > QUANTITY_MAGNITUDE:  # beyond int64 (as a Kubernetes quantity) is "no limit"
        return MAX_BYTES
    if magnitude < -QUANTITY_MAGNITUDE:
        return 1  # a fraction of a byte, rounded up
    with localcontext(prec=len(quantity) + 2 * QUANTITY_MAGNITUDE):  # exact: no rounding
        amount = number.scaleb(exponent) * QUANTITY_FACTORS[unit]
    return MAX_BYTES if amount > MAX_BYTES else math.ceil(amount)


Quantity = Annotated[
    str,
    Field(
        pattern=QUANTITY_PATTERN,
        description="A quantity above zero.",
        # the pattern is the strings'; an integer must be above zero too (the API server
        # applies a minimum to numbers alone)
        json_schema_extra={"x-kubernetes-int-or-string": True, "minimum": 1},
    ),
    BeforeValidator(quantity_text),
]


class Mode(StrEnum):
    REALTIME = "realtime"
    SERVERLESS = "serverless"
    ASYNC = "async"
    BATCH = "batch"


class SpecBlock(BaseModel):
    """camelCase in YAML, snake_case in Python; unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )
    cel_rules: ClassVar[list[tuple[str, str]]] = []  # (rule, message) for the CRD


# Every storage URI of a spec (the model, async paths, batch input and output) takes
# STORAGE_PREFIX (settings.py): what storage.parse_uri reads, with its scheme. Anything else
# would pass the spec and fail in the pods (a relative path: the pod's working directory's).
# What is read or written once (the model, batch input and output) may also be an absolute
# path, as it always could; async paths are prefixes the gateway compares: URIs only.
OBJECT_LOCATION = r"^/[^" + CONTROL + r"]*$|" + STORAGE_PREFIX
INFERENCE_OUTPUT_PATTERN = r"^[A-Za-z_, ]+$"
IMAGE_PATTERN = r"^[^" + SPACE + CONTROL + r"]+$"


class ModelSource(SpecBlock):
    uri: str = Field(
        pattern=OBJECT_LOCATION,
        description="model.tar.gz or XGBoost file: s3://bucket/key, file:///path or /path",
    )
    allow_pickle: bool = Field(
        False, description="Load a pickled booster. Unpickling runs the artifact's code."
    )
    inference_output: str | None = Field(
        None,
        pattern=INFERENCE_OUTPUT_PATTERN,
        description="The platform container's selectable outputs (its SAGEMAKER_INFERENCE_OUTPUT),"
        " comma-separated: predicted_label, labels, probability, probabilities, raw_score, "
        "raw_scores, predicted_score; the model's objective decides which are valid.",
    )


class SecretRef(SpecBlock):
    name: SecretName


class SecretKeyRef(SpecBlock):
    name: SecretName
    key: SecretKey = Field(description="Its key that holds the value.")


class BrokerSecretRef(SpecBlock):
    name: SecretName = "infermodes-rabbitmq"
    key: SecretKey = Field("url", description="Its key that holds the AMQP URL.")


# the least memory a replica may be given: the model server (Python, XGBoost and a model) or
# an async worker takes tens of MiB before its first request, so below this no replica starts;
# a value below it is mostly a unit mistaken ("512m" is 0.512 bytes, where 512Mi was meant)
MIN_MEMORY = "32Mi"


def memory_floor_problem(memory: str) -> str | None:
    """Why ``resources.memory`` is below ``MIN_MEMORY``, or None: the value, its bytes, and the
    unit likely meant when it is ``m`` (a thousandth, not a mebibyte)."""
    size = quantity_bytes(memory)
    if size >= quantity_bytes(MIN_MEMORY):
        return None
    meant = f"; 'm' is a thousandth: {memory[:-1]}Mi is likely meant" if memory[-1:] == "m" else ""
    return (
        f"must be at least {MIN_MEMORY}, as a replica's processes take tens of MiB to start; "
        f"got {shown(memory)}, {size} byte{'' if size == 1 else 's'}{meant}"
    )


class Resources(SpecBlock):
    cpu: Quantity = Field("1", description="CPU request and limit of each replica.")
    memory: Quantity = Field(
        "1Gi", description=f"Memory request and limit of each replica; at least {MIN_MEMORY}."
    )

    @field_validator("memory")
    @classmethod
    def _memory_floor(cls, memory: str, info: ValidationInfo) -> str:
        """Not of a spec ``ADMITTED`` before: earlier releases took any memory above zero."""
        problem = None if info.context == ADMITTED else memory_floor_problem(memory)
        if problem is not None:
            raise ValueError(problem)
        return memory


class ScalingMetric(StrEnum):
    INVOCATIONS_PER_INSTANCE = "InvocationsPerInstance"
    IN_FLIGHT_REQUESTS = "InFlightRequestsPerInstance"


class RealtimeScaling(SpecBlock):
    metric: ScalingMetric = Field(
        ScalingMetric.INVOCATIONS_PER_INSTANCE,
        description="InvocationsPerInstance (per minute) or InFlightRequestsPerInstance.",
    )
    target: float = Field(1000.0, gt=0, description="Target value of the metric per replica.")
    scale_in_cooldown_seconds: int = Field(
        300, ge=0, le=86400, description="Wait this long after a change before scaling in."
    )
    scale_out_cooldown_seconds: int = Field(
        0, ge=0, le=86400, description="Wait this long after a change before scaling out."
    )


# the spec's cross-field rules, in its words (the platform API says them in its own)
REPLICA_RANGE = "minReplicas must not exceed maxReplicas"
PROVISIONED_WITHIN_MAX = "provisionedConcurrency must not exceed maxConcurrency"
INPUT_INSIDE_OUTPUT = (
    "the input prefix lies inside output.uri (or is it): what lies under the output is never "
    "read as input, so no input would be left; give the outputs a prefix of their own (it may "
    "lie inside the input's)"
)


class ReplicaRange(SpecBlock):
    """Blocks with ``minReplicas``/``maxReplicas``: min may not exceed max."""

    min_replicas: int
    max_replicas: int
    cel_rules: ClassVar[list[tuple[str, str]]] = [
        ("self.minReplicas <= self.maxReplicas", REPLICA_RANGE),
    ]

    @model_validator(mode="after")
    def _replica_range(self) -> ReplicaRange:
        if self.min_replicas > self.max_replicas:
            raise ValueError(REPLICA_RANGE)
        return self


INITIAL_WITHIN_RANGE = "initialReplicas must lie within minReplicas..maxReplicas"


class StartingRange(ReplicaRange):
    """Blocks that may start at ``initialReplicas`` (within min..max) rather than at the
    minimum: the platform starts a managed variant at its InitialInstanceCount."""

    initial_replicas: int | None
    cel_rules: ClassVar[list[tuple[str, str]]] = [
        *ReplicaRange.cel_rules,
        ("!has(self.initialReplicas) || (self.minReplicas <= self.initialReplicas && "
         "self.initialReplicas <= self.maxReplicas)", INITIAL_WITHIN_RANGE),
    ]  # fmt: skip

    @model_validator(mode="after")
    def _initial_within_range(self) -> StartingRange:
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            raise ValueError(INITIAL_WITHIN_RANGE)
        return self

    def first_replicas(self) -> int:
        """What a new endpoint starts with: initialReplicas, or minReplicas without it."""
        return self.min_replicas if self.initial_replicas is None else self.initial_replicas


class RealtimeSpec(StartingRange):
    min_replicas: int = Field(1, ge=1, le=100, description="Replicas kept at no load.")
    max_replicas: int = Field(4, ge=1, le=100, description="Replicas at most.")
    initial_replicas: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Replicas a new endpoint starts with, and starts again with when this "
        "changes (default: minReplicas); the autoscaler moves them within the range from there.",
    )
    scaling: RealtimeScaling = Field(default_factory=RealtimeScaling)
    resources: Resources = Field(default_factory=Resources)
    workers: int = Field(2, ge=1, le=64, description="Model server processes per replica.")


class ServerlessSpec(SpecBlock):
    memory_size_in_mb: Literal[1024, 2048, 3072, 4096, 5120, 6144] = Field(
        2048, alias="memorySizeInMB", description="Memory of each replica; CPU in proportion."
    )
    max_concurrency: int = Field(
        20, ge=1, le=200, description="In-flight invocations at most; more get 429."
    )
    idle_timeout_seconds: int = Field(
        300, ge=10, le=86400, description="Scale to zero after this long without requests."
    )
    provisioned_concurrency: int = Field(
        0, ge=0, le=200, description="Concurrency kept warm (replicas that never scale to zero)."
    )
    concurrency_per_replica: int = Field(
        10,
        ge=1,
        le=200,
        description="In-flight invocations one replica takes before another starts: "
        "replicas = ceil(in-flight / concurrencyPerReplica).",
    )
    cel_rules: ClassVar[list[tuple[str, str]]] = [
        ("self.provisionedConcurrency <= self.maxConcurrency", PROVISIONED_WITHIN_MAX),
    ]  # fmt: skip

    @model_validator(mode="after")
    def _provisioned_within_max(self) -> ServerlessSpec:
        if self.provisioned_concurrency > self.max_concurrency:
            raise ValueError(PROVISIONED_WITHIN_MAX)
        return self


def one_webhook(field: str) -> str:
    return f"{field} and {field}SecretRef: give one of them (the URL, or the Secret key it is in)"


WEBHOOK_NOTE = (
    " http(s) with a host; not a link-local address (169.254.0.0/16, fe80::/10: where clouds "
    "serve instance metadata), as written or as the host resolves when the worker POSTs."
)


class NotificationSpec(SpecBlock):
    """Where each request's outcome is announced: the topic exchange and webhooks."""

    topic: bool = Field(True, description="Publish to the RabbitMQ topic exchange.")
    success_webhook: str | None = Field(
        None,
        pattern=WEBHOOK_PATTERN,
        max_length=WEBHOOK_MAX_LENGTH,
        description="URL POSTed on success:" + WEBHOOK_NOTE,
    )
    error_webhook: str | None = Field(
        None,
        pattern=WEBHOOK_PATTERN,
        max_length=WEBHOOK_MAX_LENGTH,
        description="URL POSTed on failure:" + WEBHOOK_NOTE,
    )
    success_webhook_secret_ref: SecretKeyRef | None = Field(
        None,
        description="successWebhook kept in a Secret's key instead (a webhook URL often carries "
        "its token): the workers read it at start; not with successWebhook.",
    )
    error_webhook_secret_ref: SecretKeyRef | None = Field(
        None,
        description="errorWebhook kept in a Secret's key instead: the workers read it at start; "
        "not with errorWebhook.",
    )
    cel_rules: ClassVar[list[tuple[str, str]]] = [
        *[(rule, f"{name} must not be a link-local or metadata address (where clouds serve "
                 "instance metadata)")
          for name in ("successWebhook", "errorWebhook")
          for rule in (f"!has(self.{name}) || !self.{name}.matches(r'{LITERAL_LINK_LOCAL_CEL}')",
                       address_cel(name))],
        *[(number_cel(name), f"{name} must write an IPv4 address as a.b.c.d, not as one number, "
                             "in hex or octal, or with fewer parts")
          for name in ("successWebhook", "errorWebhook")],
        *[(bracket_cel(name), f"{name}: the host in brackets must be an IPv6 address (or "
                              "an IPvFuture v<hex>.<...>)")
          for name in ("successWebhook", "errorWebhook")],
        *[(f"!has(self.{name}) || !self.{name}.matches(r'{PORT_OUT_OF_RANGE}')",
           f"{name}: its port must be one of 1 to 65535")
          for name in ("successWebhook", "errorWebhook")],
        *[(f"!has(self.{name}) || !has(self.{name}SecretRef)", one_webhook(name))
          for name in ("successWebhook", "errorWebhook")],
    ]  # fmt: skip

    @model_validator(mode="after")
    def _one_webhook_each(self) -> NotificationSpec:
        if self.success_webhook and self.success_webhook_secret_ref:
            raise ValueError(one_webhook("successWebhook"))
        if self.error_webhook and self.error_webhook_secret_ref:
            raise ValueError(one_webhook("errorWebhook"))
        return self

    def webhook_secret_refs(self) -> dict[str, SecretKeyRef]:
        """The Secret keys that hold webhook URLs, by the field that names each."""
        refs = {"successWebhookSecretRef": self.success_webhook_secret_ref,
                "errorWebhookSecretRef": self.error_webhook_secret_ref}  # fmt: skip
        return {field: ref for field, ref in refs.items() if ref is not None}

    @field_validator("success_webhook", "error_webhook")
    @classmethod
    def _no_link_local_webhook(cls, url: str | None) -> str | None:
        if url is not None and (out_of_range := port_refusal(url)) is not None:
            raise ValueError(out_of_range)
        refused = None if url is None else literal_refusal(url)
        if refused is not None:
            raise ValueError(
                "must not be a link-local or metadata address, nor an IPv4 "
                f"address written otherwise than as a.b.c.d: {refused}"
            )
        return url


class AsyncSpec(StartingRange):
    """Requests are queued and answered at once with an id; results go to outputPath."""

    # endpoints/async_plan.py maps these fields to the async API's and the workers' settings;
    # replicas, scaling and resources are the operator's.

    output_path: str = Field(
        pattern=STORAGE_PREFIX, description="Outputs go to <outputPath>/<id>.out."
    )
    failure_path: str | None = Field(
        None,
        pattern=STORAGE_PREFIX,
        description="Errors go to <failurePath>/<id>.error (default: outputPath).",
    )
    input_path: str | None = Field(
        None,
        pattern=STORAGE_PREFIX,
        description="Inline inputs (<inputPath>/<id>.in, removed once answered) and request "
        "records (<id>.request, kept 24 h); by-reference file:// inputs must lie here "
        "(default: <outputPath>/input).",
    )
    max_concurrent_invocations_per_instance: int = Field(
        4, ge=1, le=1000, description="Requests one replica works on at once (queue prefetch)."
    )
    invocation_timeout_seconds: int = Field(
        900,
        ge=1,
        le=MAX_INVOCATION_TIMEOUT_SECONDS,
        description="Processing time allowed per request that does not set its own.",
    )
    max_attempts: int = Field(
        DEFAULT_MAX_ATTEMPTS,
        ge=1,
        le=20,
        description="Deliveries before a request is dead-lettered.",
    )
    min_replicas: int = Field(0, ge=0, le=100, description="0 allows scaling to zero.")
    max_replicas: int = Field(4, ge=1, le=100, description="Replicas at most.")
    initial_replicas: int | None = Field(
        None,
        ge=0,
        le=100,
        description="Workers a new endpoint starts with, and starts again with when this "
        "changes (default: minReplicas); the backlog moves them within the range from there.",
    )
    target_backlog_per_instance: int = Field(
        5, ge=1, le=100000, description="Queued + in-flight requests per replica to aim for."
    )
    scale_in_cooldown_seconds: int = Field(
        300,
        ge=0,
        le=86400,
        description="Wait this long after a change (and with an empty "
        "backlog, before zero) before scaling in.",
    )
    broker_secret_ref: BrokerSecretRef = Field(
        default_factory=BrokerSecretRef,
        description="The Secret holding the workers' AMQP URL (never the URL itself).",
    )
    notification: NotificationSpec = Field(default_factory=NotificationSpec)
    resources: Resources = Field(default_factory=Resources)


# the validation context of a spec admitted before (its endpoint ran it): the checks a release
# added since are for specs being admitted, and an upgrade must not fail an endpoint that ran
ADMITTED = {"admitted": True}


def undotted_location(uri: str, info: ValidationInfo) -> str:
    """A batch job's input or output URI, refused with a ``.`` or ``..`` segment (a file path's
    percent-decoded first, ``storage.dot_segment``): a file path resolves it and S3 keeps it
    as written, so the same location would have a second spelling that the input-inside-output
    check and the output hold (``status.output_held_by``) take for another location. A URI that
    names no storage is its pattern's and the instances' to refuse. Not of a spec ``ADMITTED``
    before: earlier releases took such a URI, and its job runs or ended as it did."""
    if info.context == ADMITTED:
        return uri
    try:
        parsed = parse_uri(uri).uri
    except StorageError:
        return uri
    segment = dot_segment(parsed)
    if segment is not None:
        raise ValueError(
            f"{shown(parsed)} has a {segment!r} segment, which gives the location a second "
            "spelling (a file path resolves it; S3 keeps it as written): give it without '.' "
            "or '..' segments"
        )
    return uri


class BatchInput(SpecBlock):
    uri: str = Field(
        pattern=OBJECT_LOCATION,
        description="Input prefix or manifest file: s3://bucket/..., file:///... or /...",
    )
    data_type: BatchDataType = Field(
        "S3Prefix",
        description="S3Prefix: every object under uri (file:// too); ManifestFile: uri is a "
        'JSON list [{"prefix": ...}, "key", ...].',
    )
    content_type: BatchContentTypeHeader = Field(
        "text/csv",
        description="text/csv, application/json, application/jsonlines or text/libsvm, as a "
        "Content-Type header (parameters such as charset=utf-8 allowed).",
    )
    compression_type: CompressionType = Field("None", description="None or Gzip.")
    split_type: SplitType = Field(
        "Line", description="Line: a record per line; None: a record per object."
    )

    _undotted = field_validator("uri")(undotted_location)


class BatchOutput(SpecBlock):
    uri: str = Field(
        pattern=OBJECT_LOCATION,
        description="Prefix for <input key>.out objects: s3://bucket/..., file:///... or /...",
    )
    accept: BatchAcceptHeader = Field(
        "text/csv",
        description="text/csv, application/json or application/jsonlines, as an Accept header "
        "(parameters, q-values and wildcards read as the model server reads them).",
    )
    assemble_with: AssembleWith = Field(
        "Line", description="Line: a newline after each mini-batch's output; None: as is."
    )
    keep_existing: bool = Field(
        False,
        description="true: an input whose .out exists from before this job is skipped, not "
        "written over (a job made again after fixing inputs does what failed or was missing); "
        "false: as the platform, every output is this job's.",
    )

    _undotted = field_validator("uri")(undotted_location)


# the spec's first check, whose failure says what a filter looks like; the parser's own, with
# its words, follows. The CRD takes the parser's grammar whole (jsonpath.GRAMMAR): a filter the
# operator cannot read is refused at kubectl apply.
FILTER_PATTERN = r"^\$[^" + CONTROL + r"]*$"
FILTER_SCHEMA: dict[str, JsonValue] = {"pattern": GRAMMAR}


class DataProcessing(SpecBlock):
    input_filter: str = Field(
        "$",
        pattern=FILTER_PATTERN,
        json_schema_extra=FILTER_SCHEMA,
        description="JSONPath selecting the model's input ($[1:], $.features).",
    )
    output_filter: str = Field(
        "$",
        pattern=FILTER_PATTERN,
        json_schema_extra=FILTER_SCHEMA,
        description="JSONPath selecting what is written.",
    )
    join_source: JoinSource = Field(
        "None", description="Input: the input record joined with its prediction."
    )

    @field_validator("input_filter", "output_filter")
    @classmethod
    def _a_filter_the_instances_read(cls, text: str) -> str:
        JsonPath.parse(text)  # a ValueError names what it cannot read
        return text


def check_batch_locations(input_uri: str, data_type: str, output_uri: str) -> None:
    """An input prefix that is the output prefix's folder or lies inside it leaves no input
    (what lies under the output is never read as input, so the instances find none and the
    job fails): refused with the spec (``storage.prefix_within``; a URI that names no storage
    is the field's own pattern's to refuse)."""
    if data_type == "S3Prefix" and prefix_within(input_uri, output_uri):
        raise ValueError(INPUT_INSIDE_OUTPUT)


# check_batch_locations for the CRD, where CEL can say it: both URIs s3:// ones whose key starts
# with no '/' (parse_uri strips those), spelt as parse_uri reads them back (``s3_uri_cel``). A
# file:// URI is percent-decoded and a path resolved against the filesystem, which CEL cannot
# do: the operator alone refuses those (Failed, InvalidSpec), as any other it parses.
S3_PLAIN = r"^[sS]3://[^/]+(/[^/]|/?$)"


def s3_uri_cel(uri: str) -> str:
    """CEL for the URI ``storage.parse_uri`` reads an ``S3_PLAIN`` one (``uri``, a CEL string)
    back as: ``s3://<bucket>/<key>``, a bucket alone ending in '/'."""
    rest = f"{uri}.substring(5)"
    return f"('s3://' + {rest} + ({rest}.contains('/') ? '' : '/'))"


INPUT_INSIDE_OUTPUT_CEL = (
    f"self.input.dataType != 'S3Prefix' || !self.input.uri.matches('{S3_PLAIN}') || "
    f"!self.output.uri.matches('{S3_PLAIN}') || ![{s3_uri_cel('self.input.uri')}].exists(i, "
    f"[{s3_uri_cel('self.output.uri')}].exists(o, i == o || i.startsWith(o.find('^.*[^/]') + "
    "'/')))"
)


LIBSVM_INPUT_CEL = media.type_is_cel("self.input.contentType", (media.LIBSVM,))
CSV_INPUT_CEL = media.type_is_cel("self.input.contentType", (media.CSV,))
CSV_OUTPUT_CEL = media.type_is_cel("self.output.accept", (media.CSV,), aliases=False)


class BatchSpec(SpecBlock):
    input: BatchInput
    output: BatchOutput
    instance_count: int = Field(1, ge=1, le=100, description="Parallel workers (shards).")
    max_concurrent_transforms: int = Field(
        1, ge=1, le=MAX_CONCURRENT_TRANSFORMS, description="Mini-batches in flight per instance."
    )
    max_payload_in_mb: int = Field(
        6,
        ge=0,
        le=MAX_PAYLOAD_MB,
        alias="maxPayloadInMB",
        description="Pack records up to this (0: 100 / maxConcurrentTransforms, each "
        "transform's share of 100 MB).",
    )
    batch_strategy: BatchStrategy = Field(
        "MultiRecord", description="MultiRecord packs records; SingleRecord sends one each."
    )
    invocations_max_retries: int = Field(
        3, ge=0, le=MAX_INVOCATION_RETRIES, description="Retries of a failed mini-batch."
    )
    invocations_timeout_in_seconds: int = Field(
        600, ge=1, le=MAX_INVOCATION_TIMEOUT_SECONDS, description="Time per mini-batch attempt."
    )
    data_processing: DataProcessing = Field(default_factory=DataProcessing)
    resources: Resources = Field(default_factory=Resources)
    stop: bool = Field(
        False, description="true stops a running job (its instances end; it reports Stopped)."
    )
    cel_rules: ClassVar[list[tuple[str, str]]] = [
        (f"self.maxPayloadInMB * self.maxConcurrentTransforms <= {MAX_PAYLOAD_MB}", PAYLOAD_RULE),
        # check_batch_processing's (the API server fills in the defaults first), on the types
        # the headers name; an Accept list or wildcard is left to the operator's reading
        (f"!{LIBSVM_INPUT_CEL} || (self.dataProcessing.joinSource == 'None'"
         " && self.dataProcessing.inputFilter == '$')", LIBSVM_PROCESSING),
        ("self.dataProcessing.joinSource != 'Input' || self.output.accept.matches('[,*]') || "
         f"({CSV_INPUT_CEL} == {CSV_OUTPUT_CEL})", JOIN_LIKE_WITH_LIKE),
        (INPUT_INSIDE_OUTPUT_CEL, INPUT_INSIDE_OUTPUT),
    ]  # fmt: skip

    @model_validator(mode="after")
    def _consistent(self) -> BatchSpec:
        check_batch_payload(self.max_payload_in_mb, self.max_concurrent_transforms)
        processing = self.data_processing
        check_batch_processing(self.input.content_type, self.output.accept,
                               processing.join_source, processing.input_filter)  # fmt: skip
        check_batch_locations(self.input.uri, self.input.data_type, self.output.uri)
        return self


BATCH_IMMUTABLE = (
    "a batch job's spec cannot change once created, except spec.batch.stop; "
    "delete and re-create it to run again (output.keepExisting keeps complete outputs)"
)
BatchSpec.cel_rules = [
    *BatchSpec.cel_rules,
    (
        " && ".join(
            f"self.{field.alias} == oldSelf.{field.alias}"
            for name, field in BatchSpec.model_fields.items()
            if name != "stop" and field.alias
        ),
        BATCH_IMMUTABLE,
    ),
]


# Modes served by the same model-server Deployment: an endpoint moves between them in place
# (any other change of mode would need another kind of workload, under a selector Kubernetes
# never changes: it is refused rather than left retrying), and only they answer with the
# model server's selectable outputs.
MODEL_SERVER_MODES = (Mode.REALTIME, Mode.SERVERLESS)
MODEL_SERVER_CEL = "[" + ", ".join(f"'{mode}'" for mode in MODEL_SERVER_MODES) + "]"
MODE_CHANGE = (
    "spec.mode can change only between realtime and serverless; delete the endpoint and "
    "create it again to make it another mode (an async endpoint's queue and requests are kept)"
)


def mode_change_allowed(old: Mode, new: Mode) -> bool:
    return old == new or (old in MODEL_SERVER_MODES and new in MODEL_SERVER_MODES)


INFERENCE_OUTPUT_MODES = (
    "spec.model.inferenceOutput selects what the model server answers: realtime and serverless "
    "endpoints only (async workers and batch instances write the model's scores)"
)

MODE_BLOCKS: dict[Mode, str] = {
    Mode.REALTIME: "realtime",
    Mode.SERVERLESS: "serverless",
    Mode.ASYNC: "async",
    Mode.BATCH: "batch",
}


def block_required(block: str, mode: Mode) -> str:
    """A mode's own block missing, in the words of the spec and the CRD alike."""
    return f"spec.{block} is required when mode is {mode}"


def block_not_allowed(block: str, mode: Mode) -> str:
    """Another mode's block given, in the words of the spec and the CRD alike."""
    return f"spec.{block} is not allowed when mode is {mode}"


class EndpointSpec(SpecBlock):
    mode: Mode = Field(description="realtime, serverless, async or batch.")
    model: ModelSource
    image: str | None = Field(
        None,
        pattern=IMAGE_PATTERN,
        max_length=1024,
        description="Container image for this endpoint (default: the operator's); no spaces.",
    )
    storage_secret_ref: SecretRef | None = Field(
        None, description="Secret whose keys become env vars, e.g. AWS_ACCESS_KEY_ID."
    )
    realtime: RealtimeSpec | None = None
    serverless: ServerlessSpec | None = None
    async_: AsyncSpec | None = Field(None, alias="async")
    batch: BatchSpec | None = None

    def secret_refs(self) -> dict[str, str]:
        """The Secrets the endpoint's pods would get, by the field that names each: whoever
        may create an endpoint names them, so the operator checks them against its list."""
        refs = {}
        if self.storage_secret_ref is not None:
            refs["spec.storageSecretRef.name"] = self.storage_secret_ref.name
        if self.async_ is not None:
            refs["spec.async.brokerSecretRef.name"] = self.async_.broker_secret_ref.name
            for field, ref in self.async_.notification.webhook_secret_refs().items():
                refs[f"spec.async.notification.{field}.name"] = ref.name
        return refs

    cel_rules: ClassVar[list[tuple[str, str]]] = [
        # one rule per mode and block, so the API server says what the spec's validator says
        *[(f"self.mode != '{mode}' || has(self.{block})", block_required(block, mode))
          for mode, block in MODE_BLOCKS.items()],
        *[(f"self.mode != '{mode}' || !has(self.{block})", block_not_allowed(block, mode))
          for block in MODE_BLOCKS.values() for mode in MODE_BLOCKS if MODE_BLOCKS[mode] != block],
        ("self.mode != 'batch' || oldSelf.mode != 'batch' || self.model == oldSelf.model",
         BATCH_IMMUTABLE),
        # the Job's pod template, which Kubernetes never changes, is made of these too
        *[(f"self.mode != 'batch' || oldSelf.mode != 'batch' || (has(self.{name}) == "
           f"has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name}))",
           BATCH_IMMUTABLE) for name in ("image", "storageSecretRef")],
        (f"self.mode == oldSelf.mode || (self.mode in {MODEL_SERVER_CEL}"
         f" && oldSelf.mode in {MODEL_SERVER_CEL})", MODE_CHANGE),
        (f"!has(self.model.inferenceOutput) || self.mode in {MODEL_SERVER_CEL}",
         INFERENCE_OUTPUT_MODES),
    ]  # fmt: skip

    @model_validator(mode="after")
    def _inference_output_where_served(self) -> EndpointSpec:
        if self.model.inference_output and self.mode not in MODEL_SERVER_MODES:
            raise ValueError(INFERENCE_OUTPUT_MODES)
        return self

    @model_validator(mode="after")
    def _one_block_for_the_mode(self) -> EndpointSpec:
        for mode, block in MODE_BLOCKS.items():
            present = self.block(mode) is not None
            if present and self.mode != mode:
                raise ValueError(block_not_allowed(block, self.mode))
            if not present and self.mode == mode:
                raise ValueError(block_required(block, mode))
        return self

    def block(self, mode: Mode | None = None) -> SpecBlock | None:
        """The mode's own block (``spec.realtime`` for a realtime endpoint, ...)."""
        attribute = MODE_BLOCKS[mode or self.mode]
        found: SpecBlock | None = getattr(self, "async_" if attribute == "async" else attribute)
        return found

    def serverless_block(self) -> ServerlessSpec:
        """``spec.serverless`` of a serverless endpoint (validation guarantees it is there)."""
        if self.serverless is None:
            raise ValueError(f"a {self.mode} endpoint has no spec.serverless")
        return self.serverless

    def batch_block(self) -> BatchSpec:
        """``spec.batch`` of a batch endpoint (validation guarantees it is there)."""
        if self.batch is None:
            raise ValueError(f"a {self.mode} endpoint has no spec.batch")
        return self.batch

    def realtime_block(self) -> RealtimeSpec:
        """``spec.realtime`` of a realtime endpoint (validation guarantees it is there)."""
        if self.realtime is None:
            raise ValueError(f"a {self.mode} endpoint has no spec.realtime")
        return self.realtime


class Phase(StrEnum):
    CREATING = "Creating"
    IN_SERVICE = "InService"
    UPDATING = "Updating"
    FAILED = "Failed"
    DELETING = "Deleting"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    STOPPED = "Stopped"


# What a value failing each pattern should have been, in words: the regular expressions
# themselves are the CRD's checks and help no one reading an error.
PATTERN_MEANINGS = {
    OBJECT_LOCATION: "an s3://bucket/key URI, a file:/// URI or an absolute path, without control "
    "characters",
    STORAGE_PREFIX: "an s3://bucket/prefix or file:///path URI, without control characters",
    WEBHOOK_PATTERN: "an http:// or https:// URL without spaces or control characters",
    FILTER_PATTERN: "a JSONPath that starts with $, without control characters",
    QUANTITY_PATTERN: "a quantity above zero, as Kubernetes writes one: a number and an optional "
    "unit (500m, 2, 512Mi, 1.5Gi, 1e9, 1Pi)",
    IMAGE_PATTERN: "an image reference without spaces or control characters",
    INFERENCE_OUTPUT_PATTERN: "comma-separated output names (predicted_label, probability)",
    DNS_SUBDOMAIN_PATTERN: "a Secret's name: lowercase letters, digits, '-' and '.'",
    CONFIG_KEY_PATTERN: "a Secret's key: letters, digits, '-', '_' and '.'",
}


def problem(error: ErrorDetails) -> str:
    """One value's problem as a reader wants it: a failed pattern named by what it stands for,
    with the value given (cut short; a webhook's not at all); anything else in pydantic's
    words."""
    pattern = str(error.get("ctx", {}).get("pattern"))
    meaning = PATTERN_MEANINGS.get(pattern)
    if error["type"] == "value_error":  # our own validators' words, without pydantic's prefix
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if error["type"] != "string_pattern_mismatch" or meaning is None:
        return error["msg"]
    if pattern == WEBHOOK_PATTERN:  # a URL may carry a token: not repeated into logs
        return f"must be {meaning}"
    return f"must be {meaning}; got {shown(error['input'])}"


def parse_spec(raw: Any, admitted: bool = False) -> EndpointSpec | str:
    """The spec, or what is wrong with it (``spec_problems``); ``admitted``: one its endpoint
    ran before (``ADMITTED``)."""
    try:
        return EndpointSpec.model_validate(dict(raw), context=ADMITTED if admitted else None)
    except ValidationError as exc:
        return spec_problems(exc)


def spec_problems(
    exc: ValidationError,
    field: Callable[[str], str] = "spec.{}".format,
    wording: Mapping[str, str] | None = None,
    fields: Collection[str] = (),
) -> str:
    """Every problem of a spec, once each, after the field it is in (``field`` of its dotted
    path: ``spec.model.uri`` by default); a problem of the whole spec stands alone, unless it
    starts with one of ``fields`` and a colon (a rule over several fields that names the one to
    change: it is shown by ``field`` too). ``wording``: a rule's message as another API says it
    (its field names, not the spec's)."""
    problems = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"])
        said = problem(error)
        said = (wording or {}).get(said, said)
        named, colon, rest = said.partition(": ")
        if not path and colon and named in fields:
            path, said = named, rest
        problems.append(f"{field(path)}: {said}" if path else said)
    return "; ".join(dict.fromkeys(problems))
