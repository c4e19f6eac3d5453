"""Settings of every infermodes process: one class and env prefix per process kind.

Each is built once where its process starts (command-line flags override the environment);
nothing reads the environment at import time.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    WithJsonSchema,
    model_validator,
)
from pydantic.fields import FieldInfo

from infermodes import media
from infermodes.errors import InfermodesError, shown
from infermodes.logs import printable

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# How long an HTTP server waits for a request's headers (from its first byte) and for its body
# (from the end of the headers) before answering 408 and closing the connection.
HEADER_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 60.0
# Rows x features one request (or one streamed chunk) may decode to: 64 MiB of float32.
MAX_DECODED_VALUES = 1 << 24


class SettingsConfigDict(ConfigDict, total=False):
    """pydantic's model config, plus the prefix of a settings class's variables."""

    env_prefix: str


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def log_level_of(value: str) -> str:
    """A log level in any case (``warn`` for warning, as ``logging`` takes it); anything else
    is refused with the others named (``logging``'s own error, at start, was a traceback and a
    crash loop)."""
    level = value.strip().lower()
    level = "warning" if level == "warn" else level
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value[:40]!r}")
    return level


LogLevel = Annotated[str, AfterValidator(log_level_of)]


def storage_location(value: str) -> str:
    """A location storage can name (``storage.parse_uri``'s own refusal otherwise): a batch
    output that cannot be named cannot hold the summary that would say why the job failed."""
    from infermodes.errors import StorageError  # imported here: storage costs every process's
    from infermodes.storage import parse_uri  # start ~15 ms, and only batch settings ask it

    try:
        parse_uri(value)
    except StorageError as exc:
        raise ValueError(str(exc)) from None
    return value


StorageLocation = Annotated[str, AfterValidator(storage_location)]


class SettingsError(ValueError):
    """A variable a setting is read from that cannot be decoded (bad JSON)."""


_JSON_ORIGINS = (list, dict, set, frozenset, tuple)


def _is_json(annotation: Any) -> bool:
    """Whether a field's variable is JSON: a collection or a model (a union is not decoded,
    so ``list[str] | None`` would be refused by validation, not silently read)."""
    origin = get_origin(annotation) or annotation
    return origin in _JSON_ORIGINS or (isinstance(origin, type) and issubclass(origin, BaseModel))


def _aliases(field: FieldInfo) -> list[str]:
    """The names of a field's ``validation_alias`` (an ``AliasPath`` names no variable)."""
    alias = field.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    return [choice for choice in choices if isinstance(choice, str)]


class EnvSettings(BaseModel):
    """A process's settings: keyword arguments (its command-line flags) win over the
    environment, which wins over the defaults.

    The environment is read as pydantic-settings reads it for the field types used here,
    without importing it (~50 ms of every process's start): a field is set by
    ``<env_prefix><FIELD NAME>``, or, if it has a ``validation_alias``, by each alias taken as
    a variable name (and by the prefixed name too with ``populate_by_name``), the first one set
    winning; names match in any case, a name as written before any other case of it; an empty
    variable is an empty string, not an absent one;
    list, dict and model fields are JSON. Schemas are built on first use (``defer_build``), so
    a process builds only the class it reads. A float setting (a flag or a variable) must be a
    finite number: ``nan`` fails every bound's comparison, so it was refused as beyond the upper
    bound, and ``inf`` too, a message naming a bound instead of the problem.
    """

    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        extra="forbid", validate_default=True, defer_build=True, allow_inf_nan=False
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**self._from_environment(values), **values})

    @classmethod
    def env_names(cls, name: str) -> list[str]:
        """The variables a field is read from, in the order they are tried (none for a name
        that is no field)."""
        field = cls.model_fields.get(name)
        if field is None:
            return []
        aliases = _aliases(field)
        prefix = cls.model_config.get("env_prefix", "")
        by_name = cls.model_config.get("validate_by_name") or cls.model_config.get(
            "populate_by_name"
        )
        return [*aliases, *([f"{prefix}{name}".upper()] if by_name or not aliases else [])]

    @classmethod
    def _from_environment(cls, given: dict[str, Any]) -> dict[str, Any]:
        """What the environment sets of the fields that ``given`` does not name."""
        environ = {name.lower(): (name, value) for name, value in os.environ.items()}
        found: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            aliases = _aliases(field)
            if given.keys() & {name, *aliases}:
                continue
            names = cls.env_names(name)
            # a name as written wins over another case of it (a pod's env entry over an
            # envFrom Secret's key), whatever order the environment came in
            variable = next(((n, os.environ[n]) for n in names if n in os.environ), None)
            if variable is None:
                variable = next((environ[n.lower()] for n in names if n.lower() in environ), None)
            if variable is None:
                continue
            value: Any = variable[1]
            if _is_json(field.annotation):
                try:
                    value = json.loads(value)
                except ValueError as exc:
                    raise SettingsError(f"{variable[0]}: not valid JSON ({exc})") from None
            found[aliases[0] if aliases else name] = value
        return found


class ServeSettings(EnvSettings):
    """``infermodes serve``: the model server. Env prefix ``INFERMODES_SERVE_``."""

    model_config = SettingsConfigDict(env_prefix="INFERMODES_SERVE_", extra="forbid")

    model_uri: str = Field(description="Model artifact: file://, s3:// or a local path.")
    host: str = Field("127.0.0.1", description="Address to bind; in a pod, its pod IP or 0.0.0.0.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port (the platform contract's 8080).")
    workers: int = Field(
        2, ge=1, le=64, description="Worker processes sharing the socket; about one per core."
    )
    predict_threads: int = Field(
        1, ge=1, le=256, description="XGBoost threads per prediction in each worker."
    )
    max_payload_bytes: int = Field(
        6 * MIB, ge=1, description="Larger request bodies get 413 (the platform allows 6 MB)."
    )
    max_rows: int = Field(
        200_000,
        ge=1,
        description="Rows per request (lines, for CSV and libsvm); more get 413. Bounds the "
        "work of one request, since a libsvm row can be two bytes.",
    )
    max_values: int = Field(
        MAX_DECODED_VALUES,
        ge=1,
        description="Rows x features of one request's decoded input (4 bytes each); more get "
        "413. Bounds libsvm, whose absent features cost no bytes in the body.",
    )
    header_timeout_seconds: float = Field(
        HEADER_TIMEOUT_SECONDS,
        gt=0,
        le=3600,
        description="A request's headers must arrive within this from their first byte (408).",
    )
    body_timeout_seconds: float = Field(
        BODY_TIMEOUT_SECONDS,
        gt=0,
        le=3600,
        description="A request's body must arrive within this after its headers (408).",
    )
    offload_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="Bodies at least this large are predicted off the event loop.",
    )
    loop_predict_seconds: float = Field(
        0.25,
        gt=0,
        le=3600,
        description="A smaller body's prediction expected to take longer than this (its rows "
        "at the worker's last measured seconds per row) runs off the event loop, so that "
        "/ping and other requests are answered meanwhile.",
    )
    memory_bytes: int | None = Field(
        None,
        ge=1,
        description="The memory the server may use, shared by its workers: a body Python's "
        "readers read (JSON the native decoder does not take, CSV the native reader does not, "
        "all libsvm and RecordIO) whose estimated cost from its rows and bytes is over a "
        "worker's share gets 413; both actuators set it to the replica's memory; unset: its "
        "cgroup's limit, if any.",
    )
    max_batch_rows: int = Field(
        128,
        ge=1,
        le=100_000,
        description="Rows one predict call may gather from concurrent requests (KServe "
        "maxBatchSize, MLServer max_batch_size); a larger request is predicted alone; 1 turns "
        "batching off.",
    )
    max_batch_wait_us: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Microseconds a batch waits for more requests before predicting (KServe "
        "maxLatency, MLServer max_batch_time); 0: none, a batch is what arrived together.",
    )
    allow_pickle: bool = Field(
        False, description="Load pickled boosters. Unpickling runs the artifact's code."
    )
    inference_output: str | None = Field(
        None,
        min_length=1,
        # the platform's container reads SAGEMAKER_INFERENCE_OUTPUT: its users' configs work
        validation_alias=AliasChoices(
            "inference_output", "INFERMODES_SERVE_INFERENCE_OUTPUT", "SAGEMAKER_INFERENCE_OUTPUT"
        ),
        description="The container's selectable output keys, comma-separated (e.g. "
        "predicted_label,probabilities); checked against the model's objective at start.",
    )
    liveness_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of GET /healthz, the liveness probe's, answered off the workers' "
        "event loops (a long prediction does not delay it): 503 naming a worker whose loop is "
        "stuck. 0: none (the operator's pods use 8081).",
    )
    liveness_stall_seconds: float = Field(
        10.0,
        ge=2,  # twice the loops' tick (liveness.TICK_SECONDS): a healthy one is never silent
        le=3600,
        description="A worker's event loop silent this long while it predicts nothing is "
        "stuck: /healthz answers 503 (2 at least: the loops tick every second).",
    )
    liveness_prediction_seconds: float = Field(
        600.0,
        ge=1,
        le=86400,
        description="A prediction running this long is hung (no client waits that long: the "
        "gateway gives up after 60 s): /healthz answers 503 naming it.",
    )
    log_level: LogLevel = Field("info", description="debug, info, warning, error or critical.")


DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
# pika's socket timeout on every RabbitMQ connect (queueing.rabbitmq.connect), and its handshake
# bound unless the URL names one: the one span in which a worker's consumer loops do not turn,
# so its liveness stall bound must outlast it.
BROKER_CONNECT_TIMEOUT_SECONDS = 5.0


def named_handshake_seconds(url: str) -> float | None:
    """The bound on a connect's handshake a broker URL names (``?stack_timeout=N``), if it
    names one that reads as a number (pika refuses the URL otherwise)."""
    given = parse_qs(urlsplit(url).query).get("stack_timeout")
    try:
        return float(given[0]) if given else None
    except ValueError:
        return None


# The least stall bound of a worker's liveness: a connect's span and as much again for a busy
# machine; less, and an ordinary broker outage would fail the probe and restart every worker.
WORKER_LIVENESS_STALL_LEAST_SECONDS = 2 * BROKER_CONNECT_TIMEOUT_SECONDS
DEFAULT_MAX_ATTEMPTS = 3
MAX_INVOCATION_TIMEOUT_SECONDS = 3600  # an async request's or a batch attempt's, at most
# the gateway's (and up's) invocation timeout, at most: `infermodes invoke` waits this long
MAX_GATEWAY_INVOCATION_SECONDS = 3600.0
GATEWAY_INVOCATION_TIMEOUT_SECONDS = 60.0  # the platform's InvokeEndpoint limit, by default


# Seconds a webhook job waits, after its Nth failed send, before the next (the last repeats):
# a restart's blip is covered within a minute, and a receiver down for longer is asked every
# 10 min, so the 8 waits before the 9th and last send span 5 + 30 + 120 + 5 * 600 s, about
# 53 min, and a receiver that never answers costs a job 9 sends in that time, not in seconds.
WEBHOOK_RETRY_DELAYS = (5, 30, 120, 600)
RetryDelay = Annotated[int, Field(ge=1, le=86_400)]  # longer: no retry, a loss

# an async endpoint's name, which names its queue (a DNS label, as the worker's pods need)
EndpointName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]


class WorkerSettings(EnvSettings):
    """``infermodes worker``: consumes one async endpoint's queue. Env prefix
    ``INFERMODES_WORKER_``. Where inputs may lie and outputs go is decided when a request is
    accepted and travels in the message, so the worker needs no storage paths."""

    model_config = SettingsConfigDict(env_prefix="INFERMODES_WORKER_", extra="forbid")

    endpoint: EndpointName
    namespace: str | None = Field(
        None,
        description="The endpoint's Kubernetes namespace (the operator sets it): a request "
        "accepted for a same-named endpoint of another namespace, left in the queue that "
        "endpoint's deletion kept, is dead-lettered unread.",
    )
    model_uri: str = Field(description="Model artifact: file://, s3:// or a local path.")
    broker_url: str = Field(DEFAULT_BROKER_URL, description="AMQP URL of RabbitMQ.")
    max_concurrent_invocations: int = Field(
        1,
        ge=1,
        le=1000,
        description="maxConcurrentInvocationsPerInstance: the prefetch and the thread count.",
    )
    max_attempts: int = Field(
        DEFAULT_MAX_ATTEMPTS,
        ge=1,
        le=20,
        description="Deliveries (crashes and transient failures count) before dead-lettering; "
        "must equal the accepting side's, since it is the queue's x-delivery-limit.",
    )
    retry_backoff_seconds: float = Field(
        1.0, ge=0, le=60, description="First retry delay; doubles per attempt."
    )
    retry_backoff_max_seconds: float = Field(30.0, ge=0, le=600)
    storage_wait_seconds: float = Field(
        300.0,
        ge=0,
        le=1800,
        description="How long a worker holding a request waits out storage that fails "
        "(unreachable, 5xx, timeouts), trying again after each back-off, before the failure "
        "spends one of the request's attempts (0: at once).",
    )
    notify_topic: bool = Field(True, description="Publish each notification to the topic exchange.")
    success_webhook_urls: list[str] = Field(
        default_factory=list, description="HTTP endpoints POSTed each success notification."
    )
    error_webhook_urls: list[str] = Field(
        default_factory=list, description="HTTP endpoints POSTed each error notification."
    )
    secret_success_webhook_url: SecretStr | None = Field(
        None,
        description="One more success webhook, from a Secret's key (the spec's "
        "successWebhookSecretRef: the operator sets it from the Secret); never shown.",
    )
    secret_error_webhook_url: SecretStr | None = Field(
        None,
        description="One more error webhook, from a Secret's key (the spec's "
        "errorWebhookSecretRef); never shown.",
    )
    webhook_attempts: int = Field(3, ge=1, le=10)
    webhook_retry_delays: list[RetryDelay] = Field(
        default_factory=lambda: list(WEBHOOK_RETRY_DELAYS),
        min_length=1,
        max_length=20,
        description="Seconds a webhook job waits after its Nth failed send before the next; "
        "the last repeats. Short ones are for tests: on RabbitMQ each delay is a queue.",
    )
    predict_threads: int = Field(1, ge=1, le=256)
    chunk_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Input is decoded and predicted this many bytes at a time.",
    )
    max_json_bytes: int = Field(
        64 * MIB,
        ge=1,
        description="JSON and recordio inputs are parsed whole, so they are capped: at this "
        "(lower when the worker's memory cannot hold one per concurrent invocation).",
    )
    memory_bytes: int | None = Field(
        None,
        ge=1,
        description="The memory the worker may use, which lowers the JSON cap (both actuators "
        "set it to the spec's resources.memory); unset: its "
        "cgroup's limit (the smallest memory.max, or v1's memory.limit_in_bytes, on its own "
        "cgroup's path in /proc/self/cgroup and its parents), if any.",
    )
    metrics_host: str = Field("127.0.0.1")
    metrics_port: int = Field(9090, ge=0, le=65535, description="0 disables the side port.")
    liveness_stall_seconds: float = Field(
        60.0,
        ge=WORKER_LIVENESS_STALL_LEAST_SECONDS,
        le=3600,
        description="GET /healthz on the metrics port answers 503 once the consumer's loop, or "
        "the webhook outbox's, has not turned for this long (each turns while invocations "
        "and webhook POSTs run, while it backs off between reconnects and while it drains "
        "after SIGTERM): the liveness probe's signal. A connect attempt to RabbitMQ is the one "
        f"span without a turn (up to {BROKER_CONNECT_TIMEOUT_SECONDS:g} s, its connect "
        "timeout, or the broker URL's stack_timeout if it names one), so this is "
        f"{WORKER_LIVENESS_STALL_LEAST_SECONDS:g} s at least, and twice the stack_timeout: "
        "less, and an ordinary broker outage would fail the probe.",
    )
    allow_pickle: bool = False
    log_level: LogLevel = "info"

    @model_validator(mode="after")
    def _liveness_outlasts_a_connect(self) -> WorkerSettings:
        handshake = named_handshake_seconds(self.broker_url)
        if handshake is not None and 2 * handshake > self.liveness_stall_seconds:
            raise ValueError(
                f"liveness_stall_seconds: {self.liveness_stall_seconds:g} is under twice the "
                f"broker URL's stack_timeout ({handshake:g} s), the longest a connect to "
                "RabbitMQ may go without a turn of the consumer loops, so a broker that takes "
                "connections and does not answer would fail the liveness probe: raise it, or "
                f"lower stack_timeout ({BROKER_CONNECT_TIMEOUT_SECONDS:g} s when the URL names "
                "none)"
            )
        return self


class AsyncEndpoint(BaseModel):
    """One async endpoint as the accepting side sees it: where inline inputs (and request
    records), outputs and failures go, the invocation timeout of requests that do not set one,
    and the attempts its queue allows (the workers' ``max_attempts``)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    input_path: str
    output_path: str
    failure_path: str
    invocation_timeout_seconds: int = Field(900, ge=1, le=MAX_INVOCATION_TIMEOUT_SECONDS)
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, le=20)
    namespace: str | None = None  # the gateway's: the endpoint's namespace, stamped on messages

    @classmethod
    def under(cls, prefix: str, **options: int) -> AsyncEndpoint:
        """The default layout: ``<prefix>/input``, ``<prefix>/output``, ``<prefix>/failure``."""
        base = prefix.rstrip("/")
        return cls(
            input_path=f"{base}/input",
            output_path=f"{base}/output",
            failure_path=f"{base}/failure",
            **options,
        )


def check_storage_prefixes(setting: str, prefixes: list[str]) -> None:
    """Prefixes a setting allows storage under: each ``s3://`` (any bucket), an
    ``s3://bucket[/prefix]`` or a ``file:///absolute/path``."""
    for prefix in prefixes:
        if prefix.lower() != "s3://" and not re.fullmatch(STORAGE_PREFIX, prefix):
            raise ValueError(
                f"{setting}: {prefix!r} is not s3:// (any bucket), an s3://bucket[/prefix] or "
                "a file:///absolute/path prefix (no '?' or '#')"
            )


def inline_or_file(setting: str, inline: str | None, file: str | None) -> None:
    """A value (a URL, access keys) given inline or in a file, not both: which one wins
    would be a guess."""
    if inline and file:
        raise ValueError(f"{setting} and {setting}_file are both set: give one of them")


class AsyncAcceptSettings(EnvSettings):
    """What accepting async invocations needs, in ``infermodes async-api`` and in the gateway
    alike (each class that inherits these sets its own env prefix)."""

    max_inline_bytes: int = Field(
        16 * MIB, ge=1, description="Inline bodies are stored first; larger inputs go by reference."
    )
    publish_connections: int = Field(
        8, ge=1, le=64, description="Broker connections publishing in parallel."
    )
    allowed_input_prefixes: list[str] = Field(
        default_factory=list,
        description="By-reference inputs must lie under one of these or the endpoint's input "
        "prefix (empty: s3:// anywhere, file:// only under the endpoint's input prefix).",
    )
    sweep_interval_seconds: float = Field(
        600.0,
        ge=0,
        description="How often stale inline inputs, request records and partial writes are "
        "removed from the endpoints' storage (0: never).",
    )

    @model_validator(mode="after")
    def _input_prefixes_are_storage_prefixes(self) -> AsyncAcceptSettings:
        check_storage_prefixes("allowed_input_prefixes", self.allowed_input_prefixes)
        return self


class AsyncApiSettings(AsyncAcceptSettings):
    """``infermodes async-api``: accepts async invocations and queues them. Env prefix
    ``INFERMODES_ASYNC_API_``; ``ENDPOINTS`` is JSON: ``{"name": {"input_path": ...}}``."""

    model_config = SettingsConfigDict(env_prefix="INFERMODES_ASYNC_API_", extra="forbid")

    endpoints: dict[EndpointName, AsyncEndpoint] = Field(min_length=1)
    broker_url: str = DEFAULT_BROKER_URL
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=1, le=65535)
    log_level: LogLevel = "info"


IMAGE_BOUNDARIES = "/:@"  # where a reference's name ends: a path segment, a tag, a digest


def image_allowed(image: str, own: str, allowed: list[str]) -> bool:
    """Whether an endpoint may run ``image``: the operator's own, one ``allowed`` names, or one
    under an allowed prefix (``...*``, ``*`` alone: any)."""
    return image == own or any(_image_matches(image, entry) for entry in allowed)


def _image_matches(image: str, entry: str) -> bool:
    """A prefix (``entry`` ending in ``*``) matches at a boundary of the reference, never inside
    a name: ``r.example/team*`` is ``r.example/team`` itself, anything under
    ``r.example/team/``, and its tags and digests (``:1``, ``@sha256:...``), not
    ``r.example/team-evil/x``. After a ``:`` or ``@`` nothing may hold a ``/``: that ``:`` was
    a registry's port (``r.example:5000/x`` is another registry, not a tag of ``r.example``)."""
    if not entry.endswith("*"):
        return image == entry
    prefix = entry[:-1]
    if not prefix:
        return True
    if prefix[-1] in IMAGE_BOUNDARIES:
        boundary, rest = prefix[-1], image[len(prefix) :]
        return image.startswith(prefix) and (boundary == "/" or "/" not in rest)
    if image == prefix:
        return True
    if not image.startswith(prefix) or image[len(prefix)] not in IMAGE_BOUNDARIES:
        return False
    return image[len(prefix)] == "/" or "/" not in image[len(prefix) + 1 :]


def name_allowed(name: str, allowed: list[str]) -> bool:
    """Whether ``allowed`` names ``name``: exactly, or by a prefix ending in ``*``."""
    return any(name.startswith(e[:-1]) if e.endswith("*") else name == e for e in allowed)


DEFAULT_SECRET_NAMES = ["infermodes-*"]  # the convention: Secrets meant for endpoints


NETWORK_PEER_KEYS = frozenset({"namespaceSelector", "podSelector", "ipBlock"})


def network_peer(peer: dict[str, Any]) -> dict[str, Any]:
    """A NetworkPolicy peer, refused at start when it is not one: an empty one (or a typo's
    keys alone) would let every pod in."""
    unknown = sorted(set(peer) - NETWORK_PEER_KEYS)
    if unknown or not peer:
        raise ValueError(
            f"a NetworkPolicy peer has {', '.join(sorted(NETWORK_PEER_KEYS))} only, at least one "
            f"of them; this one has {', '.join(unknown) or 'none'}"
        )
    return peer


NetworkPeer = Annotated[dict[str, Any], AfterValidator(network_peer)]


class OperatorSettings(EnvSettings):
    """``infermodes operator``: the kopf controller. Env prefix ``INFERMODES_OPERATOR_``."""

    model_config = SettingsConfigDict(env_prefix="INFERMODES_OPERATOR_", extra="forbid")

    image: str = Field(
        "ghcr.io/infermodes/infermodes:0.1.0",
        description="Image of the pods the operator creates (endpoints may override it).",
    )
    allowed_images: list[str] = Field(
        default_factory=list,
        description="Images an endpoint's spec.image may name besides the operator's own: each "
        "an exact image, or a prefix ending in '*' that matches at a '/', ':' or '@' of the "
        "reference (registry.example/team* is that image's tags and everything under "
        "registry.example/team/, not registry.example/team-evil/x). Empty: only the "
        "operator's own (whoever may create an endpoint would otherwise run any image).",
    )
    allowed_secret_names: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SECRET_NAMES),
        description="Secrets an endpoint may name (spec.storageSecretRef, "
        "spec.async.brokerSecretRef), in its own namespace: exact names, or prefixes ending in "
        "'*'; '*' alone: any. Its pods get the Secret, so whoever may create an endpoint would "
        "otherwise use any Secret of the namespace (storage credentials, broker URLs) through "
        "them. Default: names starting infermodes- (the chart adds the platform API's Secrets).",
    )
    allow_pickle: bool = Field(
        False,
        description="Let endpoints load pickled models they ask for (spec.model.allowPickle). "
        "Unpickling runs the artifact's code: whoever may create an endpoint could then run any "
        "code in its pods, as allowed_images otherwise prevents. Off: such endpoints fail.",
    )
    network_policy: bool = Field(
        False,
        description="Give each endpoint a NetworkPolicy: its pods then accept connections only "
        "from serving_from (model servers' port) and metrics_from (every endpoint pod's port), "
        "so nothing bypasses the gateway's authentication. Off: none (what the cluster's "
        "network lets through reaches them), and an endpoint's own made while on is deleted.",
    )
    serving_from: list[NetworkPeer] = Field(
        default_factory=list,
        description="NetworkPolicy peers (namespaceSelector, podSelector, ipBlock) that may call "
        "model servers: the gateway's pods. Empty: no caller (the metrics_from peers alone "
        "reach model servers), as with no gateway and async or batch endpoints only.",
    )
    metrics_from: list[NetworkPeer] = Field(
        default_factory=list,
        description="NetworkPolicy peers that may reach every endpoint pod's port (model "
        "servers' /metrics, workers' and batch instances' metrics port): the operator's pods, "
        "which read load, in-flight counts and progress there, and a Prometheus. Required "
        "(one peer at least) with network_policy: none would admit no reader at all.",
    )
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty means all namespaces."
    )
    resync_seconds: float = Field(
        10.0, gt=0, le=3600, description="How often each endpoint is reconciled and scaled."
    )
    broker_url: str | None = Field(
        None,
        description="AMQP URL of the RabbitMQ that async endpoints use, for their backlog "
        "(from a Secret; without it, async endpoints keep their replicas).",
    )
    management_url: str | None = Field(
        None,
        description="RabbitMQ's management API (http://user:pass@host:15672): the broker's "
        "in-flight counts; without it the workers' own counts (their metrics port) are used.",
    )
    broker_url_file: str | None = Field(
        None,
        description="A file holding broker_url instead (a mounted Secret's key, as the chart "
        "gives it): read again at every new broker connection, so a rotated password is used "
        "without a restart.",
    )
    management_url_file: str | None = Field(
        None,
        description="A file holding management_url instead, read again at every reading; "
        "a file that does not exist is no management API (an optional key of the Secret).",
    )
    activation_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often the operator looks at each async endpoint's queue between "
        "resyncs, to start workers for a pool at zero or scale a pool out when the requests "
        "waiting outgrow it (the delay of either at most; scale-in waits for the resync).",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of the operator's /metrics; in a pod, its pod IP."
    )
    metrics_port: int = Field(
        9090, ge=0, le=65535, description="Port of the operator's /metrics; 0 disables it."
    )
    liveness_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of kopf's liveness endpoint, GET /healthz on metrics_host, answered "
        "on the operator's event loop (a stuck loop fails it); 0: none (the chart's: 8081).",
    )
    log_level: LogLevel = Field("info", description="debug, info, warning, error or critical.")

    @model_validator(mode="after")
    def _urls_inline_or_in_files(self) -> OperatorSettings:
        inline_or_file("broker_url", self.broker_url, self.broker_url_file)
        inline_or_file("management_url", self.management_url, self.management_url_file)
        return self

    @model_validator(mode="after")
    def _policies_admit_the_operator(self) -> OperatorSettings:
        """With no metrics_from, each endpoint's NetworkPolicy would admit nobody to async
        workers and batch instances, and no reader to model servers' load: the operator
        would scale and report blind while every pod looks healthy. Refused, naming it."""
        if self.network_policy and not self.metrics_from:
            raise ValueError(
                "network_policy is on but metrics_from lists no peer: every endpoint pod's "
                "NetworkPolicy would then admit no reader of its port, the operator's own "
                "readings (load, in-flight counts, progress) included; list the operator's "
                "pods (a namespaceSelector and podSelector) in metrics_from, or turn "
                "network_policy off"
            )
        return self


# Where an endpoint keeps objects, and where the gateway may: s3://bucket[/prefix] or
# file:///absolute/path (schemes in any case). No '?' or '#': a URI reader would take them for
# a query or fragment and drop the rest. No control character: a NUL cannot be in a path (an
# OS call raises), and none belongs in an S3 key.
CONTROL = r"\x00-\x1f\x7f"  # the control characters, for a pattern's character class
# white space beyond CONTROL, for a character class: what \s means to Python and to pydantic's
# regex (Unicode's), written out because the API server's RE2 reads \s as ASCII's alone (a
# no-break space passed kubectl apply and failed the operator's parsing of the spec)
SPACE = " \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
STORAGE_PREFIX = (
    r"^([sS]3://[^/?#" + CONTROL + r"]+(/[^?#" + CONTROL + r"]*)?"
    r"|[fF][iI][lL][eE]://(localhost)?/[^?#" + CONTROL + r"]*)$"
)


class GatewaySettings(AsyncAcceptSettings):
    """``infermodes gateway``: the front door of synchronous endpoints. Env prefix
    ``INFERMODES_GATEWAY_``. Endpoints come from the Kubernetes API (watched in ``namespaces``)
    or, with ``static_endpoints``, from a JSON file (no cluster)."""

    model_config = SettingsConfigDict(env_prefix="INFERMODES_GATEWAY_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address to bind; in a pod, 0.0.0.0.")
    port: int = Field(8090, ge=1, le=65535, description="TCP port.")
    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces whose endpoints are served; empty means the gateway's own.",
    )
    static_endpoints: str | None = Field(
        None, description="A JSON file of endpoints and replica addresses instead of Kubernetes."
    )
    gateway_id: str = Field(
        "",
        description="This replica's name in demand annotations (default: the host name, which "
        "is the pod name in a pod).",
    )
    invocation_timeout_seconds: float = Field(
        GATEWAY_INVOCATION_TIMEOUT_SECONDS,
        gt=0,
        le=MAX_GATEWAY_INVOCATION_SECONDS,
        description="Holding and forwarding one invocation take at most this.",
    )
    serverless_max_payload_bytes: int = Field(
        4 * MIB, ge=1, description="Larger serverless request bodies get 413 (the platform's 4 MB)."
    )
    realtime_max_payload_bytes: int = Field(
        6 * MIB, ge=1, description="Larger realtime request bodies get 413 (the platform's 6 MB)."
    )
    probe_interval_seconds: float = Field(
        0.05, gt=0, le=10, description="How often a new replica's /ping is tried until it answers."
    )
    probe_timeout_seconds: float = Field(
        600.0, gt=0, description="A replica whose /ping has not answered by then is given up on."
    )
    upstream_idle_seconds: float = Field(
        30.0,
        gt=0,
        description="Idle keep-alive connections to replicas are closed after this (below the "
        "model server's 75 s, so the gateway, not the replica, closes them).",
    )
    max_idle_connections: int = Field(
        64, ge=1, le=10000, description="Idle keep-alive connections kept per replica."
    )
    drain_delay_seconds: float = Field(
        0.0,
        ge=0,
        le=300,
        description="After SIGTERM, keep accepting this long (readiness already failing) so load "
        "balancers stop sending before the listener closes.",
    )
    drain_timeout_seconds: float = Field(
        70.0, gt=0, le=3900, description="In-flight invocations get this long to finish on exit."
    )
    broker_url: str | None = Field(
        None,
        description="The broker (amqp://... or sqlite:///...) of async endpoints; with it the "
        "gateway also accepts POST /endpoints/{name}/async-invocations.",
    )
    broker_url_file: str | None = Field(
        None,
        description="A file holding broker_url instead (a mounted Secret's key, as the chart "
        "gives it): read again at every new broker connection, so a rotated password is used "
        "without a restart.",
    )
    async_storage_prefixes: list[str] = Field(
        default_factory=list,
        description="Where the gateway may store and sweep, with its own credentials, for async "
        "endpoints: each of an endpoint's inputPath, outputPath and failurePath must lie under "
        "one of these (s3://... or file:///...; {namespace} stands for the endpoint's "
        "namespace), or its async invocations get 403. Empty: anywhere (logged at start).",
    )
    access_keys: SecretStr = Field(
        SecretStr(""),
        description="Access keys the managed platform's API accepts (AWS Signature V4), as "
        "'<access key id>:<secret>' entries separated by commas or newlines; every request but "
        "/healthz, /readyz and /metrics must be signed by one. Empty: the gateway is open, and "
        "says so in its log and /readyz.",
    )
    access_keys_file: str | None = Field(
        None,
        description="A file holding access_keys instead (not both; the chart's "
        "gateway.auth.secretRef, mounted): looked at again every second and read again when it "
        "changed, so added, rotated and removed keys take effect without a restart; a change "
        "that cannot be read keeps the keys read before (logged). A gateway given a file is "
        "never open: while it holds no key, every signed request is refused.",
    )
    open_platform_api: bool = Field(
        False,
        description="Serve the platform API (POST /) without access keys: anyone who reaches "
        "the gateway may then create workloads and name Secrets for them. Off by default: "
        "without access keys, POST / is refused (403) saying how to turn it on.",
    )
    platform_namespace: str = Field(
        "",
        description="Where the platform API keeps its models, endpoint configs, endpoints and "
        "transform jobs; empty means the gateway's own namespace.",
    )
    platform_storage_secret: str | None = Field(
        None,
        description="A Secret in the platform namespace whose keys become the env of endpoints "
        "the API creates (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...).",
    )
    platform_broker_secret: str | None = Field(
        None,
        description="A Secret in the platform namespace holding the AMQP URL (key url) of async "
        "endpoints the API creates.",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Serve /metrics on this port of the same host instead of the gateway's own "
        "(which then answers it 404): endpoint names and traffic for the scraper alone, who "
        "cannot sign requests. 0: on the gateway's port, unsigned (infermodes up: always).",
    )
    log_level: LogLevel = Field("info", description="debug, info, warning, error or critical.")

    @model_validator(mode="after")
    def _storage_prefixes_have_schemes(self) -> GatewaySettings:
        check_storage_prefixes("async_storage_prefixes", self.async_storage_prefixes)
        inline_or_file("broker_url", self.broker_url, self.broker_url_file)
        inline_or_file("access_keys", self.access_keys.get_secret_value(), self.access_keys_file)
        if self.metrics_port == self.port:
            raise ValueError(f"metrics_port {self.metrics_port} is the gateway's own port")
        return self


# The batch transform's vocabulary and limits, the managed platform's: the spec's batch block
# (``endpoints/spec.py``) takes them from here, so the CRD and the runner cannot disagree.
BatchContentType = Literal["text/csv", "application/json", "application/jsonlines", "text/libsvm"]
BatchAccept = Literal["text/csv", "application/json", "application/jsonlines"]
BATCH_CONTENT_TYPES: tuple[str, ...] = get_args(BatchContentType)
MAX_HEADER_LENGTH = 256  # the platform's, for TransformInput.ContentType and Accept
BATCH_CONTENT_TYPE_PATTERN = media.content_type_pattern(BATCH_CONTENT_TYPES)
BATCH_ACCEPT_PATTERN = media.accept_pattern()


def batch_content_type(header: str) -> str:
    """A Content-Type of the types a batch reads (JSON lines too, which no request takes)."""
    return media.content_type_of(header, BATCH_CONTENT_TYPES)


def _header_reader(read: Callable[[str], str], pattern: str, what: str) -> BeforeValidator:
    """A batch's contentType or accept is the header the instances send each mini-batch (the
    platform's TransformInput.ContentType, TransformOutput.Accept): read as the model server
    reads it (``media``), parameters and all, by the spec, the CRD (``pattern``, what a schema
    can check of it) and the runner's settings alike; the field keeps the type it names."""

    def read_header(value: object) -> object:
        if not isinstance(value, str):
            return value  # the type's own check names it
        if len(value) > MAX_HEADER_LENGTH:
            raise ValueError(f"must be at most {MAX_HEADER_LENGTH} characters")
        try:
            kind = read(value)
        except InfermodesError as exc:
            raise ValueError(str(exc)) from None
        if not re.fullmatch(pattern, value):  # control characters, odd white space
            raise ValueError(f"must be {what}, optionally with parameters; got {shown(value)}")
        return kind

    return BeforeValidator(read_header)


def _header_schema(pattern: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, "maxLength": MAX_HEADER_LENGTH})


BatchContentTypeHeader = Annotated[
    BatchContentType,
    _header_reader(batch_content_type, BATCH_CONTENT_TYPE_PATTERN, ", ".join(BATCH_CONTENT_TYPES)),
    _header_schema(BATCH_CONTENT_TYPE_PATTERN),
]
BatchAcceptHeader = Annotated[
    BatchAccept,
    _header_reader(media.accept_of, BATCH_ACCEPT_PATTERN, "an Accept list naming "
                   + ", ".join(media.OUTPUT_TYPES) + " or a wildcard"),
    _header_schema(BATCH_ACCEPT_PATTERN),
]  # fmt: skip
BatchDataType = Literal["S3Prefix", "ManifestFile"]
SplitType = Literal["None", "Line"]
CompressionType = Literal["None", "Gzip"]
BatchStrategy = Literal["SingleRecord", "MultiRecord"]
AssembleWith = Literal["None", "Line"]
JoinSource = Literal["None", "Input"]
MAX_PAYLOAD_MB = 100  # maxPayloadInMB, and maxPayloadInMB x maxConcurrentTransforms, at most
MAX_CONCURRENT_TRANSFORMS = 100
MAX_INVOCATION_RETRIES = 3
PAYLOAD_RULE = "maxPayloadInMB x maxConcurrentTransforms must not exceed 100"
LIBSVM_PROCESSING = "inputFilter and joinSource need CSV or JSON input, not libsvm"
JOIN_LIKE_WITH_LIKE = (
    "joinSource Input joins like with like: CSV input needs accept text/csv, JSON input "
    "application/json or application/jsonlines"
)


def check_batch_payload(max_payload_in_mb: int, max_concurrent_transforms: int) -> None:
    """The platform's cross-field limit: what one instance holds in flight stays <= 100 MB."""
    if max_payload_in_mb * max_concurrent_transforms > MAX_PAYLOAD_MB:
        raise ValueError(PAYLOAD_RULE)


def check_batch_processing(
    content_type: str, accept: str, join_source: str, input_filter: str
) -> None:
    """What the instances cannot do with the data, refused with the spec (not by every
    instance at its start, which only its log would tell)."""
    if content_type == "text/libsvm" and (join_source != "None" or input_filter != "$"):
        raise ValueError(LIBSVM_PROCESSING)
    csv_in, csv_out = content_type == "text/csv", accept == "text/csv"
    if join_source == "Input" and csv_in != csv_out:
        raise ValueError(JOIN_LIKE_WITH_LIKE)


class BatchSettings(EnvSettings):
    """``infermodes batch``: one instance (Job index) of a batch transform. Env prefix
    ``INFERMODES_BATCH_``; the instance index also reads ``JOB_COMPLETION_INDEX``, which
    Kubernetes sets in every pod of an Indexed Job. Field names follow the spec's batch block."""

    model_config = SettingsConfigDict(
        env_prefix="INFERMODES_BATCH_", extra="forbid", populate_by_name=True
    )

    model_uri: str = Field(description="Model artifact: file://, s3:// or a local path.")
    input_uri: str = Field(description="Input prefix, or the manifest file (ManifestFile).")
    input_data_type: BatchDataType = Field(
        "S3Prefix", description="S3Prefix: every object under input_uri (file:// too)."
    )
    output_uri: StorageLocation = Field(description="Prefix of the <input key>.out objects.")
    run_id: str = Field(
        "",
        max_length=128,
        pattern=r"^[A-Za-z0-9-]*$",
        description="The job's identity (its InferenceEndpoint's UID): an output that exists "
        "from before the job is written over, one it wrote is skipped when it runs again; "
        "empty: any output that exists is skipped (a re-run from a shell).",
    )
    keep_existing: bool = Field(
        False,
        description="Skip any output that exists, whoever wrote it (output.keepExisting); "
        "with a run id the job still plans from its one stored input listing.",
    )
    content_type: BatchContentTypeHeader = "text/csv"
    compression_type: CompressionType = "None"
    split_type: SplitType = "Line"
    batch_strategy: BatchStrategy = "MultiRecord"
    max_payload_in_mb: int = Field(
        6,
        ge=0,
        le=MAX_PAYLOAD_MB,
        description="Mini-batch size cap; 0 means 100 / max_concurrent_transforms (payload_mb). "
        "Mini-batches Python reads are held to the memory's share too (memory_bytes).",
    )
    max_concurrent_transforms: int = Field(1, ge=1, le=MAX_CONCURRENT_TRANSFORMS)
    accept: BatchAcceptHeader = "text/csv"
    assemble_with: AssembleWith = "Line"
    input_filter: str = "$"
    output_filter: str = "$"
    join_source: JoinSource = "None"
    invocations_max_retries: int = Field(3, ge=0, le=MAX_INVOCATION_RETRIES)
    invocations_timeout_in_seconds: float = Field(
        600.0, gt=0, le=MAX_INVOCATION_TIMEOUT_SECONDS, description="Per mini-batch attempt."
    )
    instance_index: int = Field(
        0,
        ge=0,
        validation_alias=AliasChoices(
            "instance_index", "INFERMODES_BATCH_INSTANCE_INDEX", "JOB_COMPLETION_INDEX"
        ),
    )
    instance_count: int = Field(1, ge=1, le=1000)
    split_min_bytes: int = Field(
        64 * MIB,
        ge=1,
        description="A Line object at least this large and over its fair share is split in "
        "byte ranges over instances.",
    )
    predict_threads: int = Field(1, ge=1, le=256, description="XGBoost threads per mini-batch.")
    memory_bytes: int | None = Field(
        None,
        ge=1,
        description="The memory the instance may use, shared by its concurrent transforms, "
        "which caps whole JSON documents (application/json, split_type None) at their worst "
        "cost per byte and holds libsvm mini-batches, which Python's reader reads, to each "
        "one's share at their estimated cost (rows x 232 + bytes x 23 + "
        "the matrix of the model's width, rows x features x 4; a line alone over it "
        "fails its object); CSV, which the native readers take, is not capped; both actuators "
        "set it to the spec's resources.memory; unset: its cgroup's limit, if any.",
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9090, ge=0, le=65535, description="0 disables the side port.")
    liveness_stall_seconds: float = Field(
        300.0,
        ge=1,
        le=86400,
        description="GET /healthz on the metrics port answers 503 once a mini-batch has been in "
        "flight for (invocations_max_retries + 1) x (invocations_timeout_in_seconds + this): "
        "each attempt may overrun its timeout by this much (slow attempts fail the mini-batch, "
        "not the pod); past that it is hung. It covers a worker process's start "
        "and model load too, which the first mini-batches wait for.",
    )
    termination_message_path: str | None = Field(
        None, description="Also write the summary here (a pod's /dev/termination-log)."
    )
    allow_pickle: bool = False
    log_level: LogLevel = "info"

    @property
    def liveness_bound_seconds(self) -> float:
        """How long a mini-batch may be in flight before the instance counts as stuck: each
        attempt may overrun its timeout by the allowance, since an attempt past its timeout is
        judged only when it ends (slow, it fails the mini-batch, not the pod)."""
        attempts = self.invocations_max_retries + 1
        return attempts * (self.invocations_timeout_in_seconds + self.liveness_stall_seconds)

    @property
    def payload_mb(self) -> int:
        """A mini-batch's cap: maxPayloadInMB, or for 0 (the platform's "no limit", for the
        chunked requests of algorithms that take them, which the instances never send) each
        transform's share of 100 MB, as payload x concurrency <= 100 would have it: ~3 x
        (N + 1) x 100 MB held at once otherwise, 30 GB at N = 100."""
        return self.max_payload_in_mb or MAX_PAYLOAD_MB // self.max_concurrent_transforms

    @model_validator(mode="after")
    def _consistent(self) -> BatchSettings:
        check_batch_payload(self.max_payload_in_mb, self.max_concurrent_transforms)
        if self.instance_index >= self.instance_count:
            raise ValueError(
                f"instance_index {self.instance_index} must be below instance_count "
                f"{self.instance_count}"
            )
        check_batch_processing(self.content_type, self.accept, self.join_source, self.input_filter)
        return self


# every process's settings: a variable under one's prefix is that process's, even if another's
# prefix is a shorter start of it
PROCESS_SETTINGS: tuple[type[EnvSettings], ...] = (
    ServeSettings, WorkerSettings, AsyncApiSettings, OperatorSettings, GatewaySettings,
    BatchSettings,
)  # fmt: skip


def variables_of(settings_class: type[EnvSettings]) -> dict[str, str]:
    """Each variable (upper case, as names match in any case) a class reads, to its field."""
    return {
        variable.upper(): name
        for name in settings_class.model_fields
        for variable in settings_class.env_names(name)
    }


# what the kubelet sets for each Service of a pod's namespace (unless the pod disables service
# links), after the Service's name: ``infermodes-gateway`` gives INFERMODES_GATEWAY_SERVICE_HOST,
# _SERVICE_PORT, _SERVICE_PORT_<PORT NAME>, _PORT, _PORT_80_TCP and _PORT_80_TCP_PROTO/PORT/ADDR
SERVICE_LINK = re.compile(
    r"(\w+?)_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)"
)


def service_link(variable: str, names: set[str]) -> bool:
    """Whether ``variable`` is one of a Service's link variables (``SERVICE_LINK``), as its
    ``<SERVICE>_SERVICE_HOST`` among the environment's ``names`` (upper case) shows: a misspelt
    setting ending in ``_PORT`` is not."""
    link = SERVICE_LINK.fullmatch(variable.upper())
    return link is not None and f"{link.group(1)}_SERVICE_HOST" in names


def unknown_variables(settings_class: type[EnvSettings], environ: Mapping[str, str]) -> list[str]:
    """The variables of ``environ`` under the class's prefix (in any case, as it reads them)
    that none of its fields reads, nor a class whose longer prefix they start with: a misspelt
    setting is otherwise ignored without a word (access keys so, a gateway left open). Not a
    Service's link variables (``SERVICE_LINK``): a Service named ``infermodes-gateway`` in
    the namespace gives every pod there ``INFERMODES_GATEWAY_SERVICE_HOST`` and its kin."""
    prefix = settings_class.model_config.get("env_prefix", "")
    longer = tuple(
        other.model_config["env_prefix"]
        for other in PROCESS_SETTINGS
        if len(other.model_config["env_prefix"]) > len(prefix)
        and other.model_config["env_prefix"].startswith(prefix)
    )
    known = variables_of(settings_class)
    names = {name.upper() for name in environ}
    ours = [
        variable
        for variable in environ
        if variable.upper().startswith(prefix)
        and not variable.upper().startswith(longer)
        and variable.upper() not in known
        and not service_link(variable, names)
    ]
    return sorted(ours, key=str.upper)


def did_you_mean(settings_class: type[EnvSettings], variable: str) -> str:
    """ "did you mean <the class's variable closest to ``variable``>?" if one is close (its
    name after the prefix, compared without case: every name shares the prefix), else ""."""
    from difflib import get_close_matches

    prefix = settings_class.model_config.get("env_prefix", "")
    ends = [name[len(prefix) :] for name in variables_of(settings_class) if name.startswith(prefix)]
    close = get_close_matches(variable[len(prefix) :].upper(), ends, n=1, cutoff=0.75)
    return f"did you mean {prefix}{close[0]}?" if close else ""


NO_SUCH_SETTING = "no such setting"


def unknown_reason(settings_class: type[EnvSettings], variable: str) -> str:
    """What a warning says of a variable no setting of the class reads, with
    ``did_you_mean``'s guess: every process's warning and ``up``'s in the same words."""
    guess = did_you_mean(settings_class, variable)
    return f"{NO_SUCH_SETTING}; {guess}" if guess else NO_SUCH_SETTING


def variables_named(reasons: Mapping[str, str]) -> str:
    """Variables, each with what is said of it, for one log line: names only, a value may be
    a secret, and a name's control characters escaped (a newline in it would start a forged
    line). Empty if there are none."""
    return "; ".join(f"{printable(variable)} ({reason})" for variable, reason in reasons.items())


def unknown_variables_named(settings_class: type[EnvSettings], environ: Mapping[str, str]) -> str:
    """``unknown_variables``, each with its ``unknown_reason``, for one log line."""
    return variables_named({
        variable: unknown_reason(settings_class, variable)
        for variable in unknown_variables(settings_class, environ)
    })  # fmt: skip


def warn_of_unknown_variables(settings: EnvSettings) -> None:
    """Log, once at a process's start, the variables under its settings' prefix it ignores.
    Not refused: a variable a later release reads must not stop this one from starting."""
    warn_of_variables_unknown_to(type(settings), os.environ)


def warn_of_variables_unknown_to(
    settings_class: type[EnvSettings], environ: Mapping[str, str]
) -> None:
    """The warning of ``warn_of_unknown_variables``, for a process of ``settings_class`` run
    with ``environ``: also ``infermodes up``'s, once for all the processes it runs."""
    if named := unknown_variables_named(settings_class, environ):
        prefix = settings_class.model_config.get("env_prefix", "")
        log.warning("these %s* variables are ignored: %s", prefix, named)
