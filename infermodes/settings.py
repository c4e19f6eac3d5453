"""Settings of every infermodes process: one class and env prefix per process kind.

Each is built once where its process starts (command-line flags override the environment);
nothing reads the environment at import time.
"""

from __future__ import annotations

from pydantic import Field
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
