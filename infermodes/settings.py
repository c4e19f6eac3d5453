"""Settings of every infermodes process: one class and env prefix per process kind.

Each is built once where its process starts (command-line flags override the environment);
nothing reads the environment at import time.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class ServeSettings(BaseSettings):
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
    offload_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="Bodies at least this large are predicted off the event loop.",
    )
    allow_pickle: bool = Field(
        False, description="Load pickled boosters. Unpickling runs the artifact's code."
    )
    log_level: str = Field("info", description="debug, info, warning or error.")


DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_MAX_ATTEMPTS = 3


class WorkerSettings(BaseSettings):
    """``infermodes worker``: consumes one async endpoint's queue. Env prefix
    ``INFERMODES_WORKER_``. Where outputs go is decided when a request is accepted and travels
    in the message, so the worker needs no storage paths."""

    model_config = SettingsConfigDict(env_prefix="INFERMODES_WORKER_", extra="forbid")

    endpoint: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
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
    webhook_urls: list[str] = Field(
        default_factory=list, description="HTTP endpoints POSTed each notification."
    )
    webhook_attempts: int = Field(3, ge=1, le=10)
    predict_threads: int = Field(1, ge=1, le=256)
    chunk_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Input is decoded and predicted this many bytes at a time.",
    )
    max_json_bytes: int = Field(
        64 * MIB, ge=1, description="JSON inputs are parsed whole, so they are capped."
    )
    metrics_host: str = Field("127.0.0.1")
    metrics_port: int = Field(9090, ge=0, le=65535, description="0 disables the side port.")
    allow_pickle: bool = False
    log_level: str = "info"


class AsyncEndpoint(BaseModel):
    """Where one async endpoint keeps inline inputs, outputs and failures."""

    model_config = ConfigDict(extra="forbid")

    input_path: str
    output_path: str
    failure_path: str

    @classmethod
    def under(cls, prefix: str) -> AsyncEndpoint:
        """The default layout: ``<prefix>/input``, ``<prefix>/output``, ``<prefix>/failure``."""
        base = prefix.rstrip("/")
        return cls(
            input_path=f"{base}/input", output_path=f"{base}/output", failure_path=f"{base}/failure"
        )


class AsyncApiSettings(BaseSettings):
    """``infermodes async-api``: accepts async invocations and queues them. Env prefix
    ``INFERMODES_ASYNC_API_``; ``ENDPOINTS`` is JSON: ``{"name": {"input_path": ...}}``."""

    model_config = SettingsConfigDict(env_prefix="INFERMODES_ASYNC_API_", extra="forbid")

    endpoints: dict[str, AsyncEndpoint] = Field(min_length=1)
    broker_url: str = DEFAULT_BROKER_URL
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, le=20)
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=1, le=65535)
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
    log_level: str = "info"


class OperatorSettings(BaseSettings):
    """``infermodes operator``: the kopf controller. Env prefix ``INFERMODES_OPERATOR_``."""

    model_config = SettingsConfigDict(env_prefix="INFERMODES_OPERATOR_", extra="forbid")

    image: str = Field(
        "ghcr.io/infermodes/infermodes:0.1.0",
        description="Image of the pods the operator creates (endpoints may override it).",
    )
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty means all namespaces."
    )
    resync_seconds: float = Field(
        10.0, gt=0, le=3600, description="How often each endpoint is reconciled and scaled."
    )
    log_level: str = Field("info", description="debug, info, warning or error.")
