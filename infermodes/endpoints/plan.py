"""The process plan: the command and environment of each process an endpoint runs.

Both actuators start processes from these plans (the operator as containers, the local runtime
as child processes), and every variable name is generated from the settings class of the
process that reads it, so a renamed setting cannot leave a stale, ignored variable behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from infermodes.endpoints.spec import EndpointSpec, Mode, quantity_bytes
from infermodes.errors import EXIT_CANNOT_START, EXIT_MODEL_LOAD_FAILED, EXIT_OBJECTS_FAILED
from infermodes.settings import (
    GATEWAY_INVOCATION_TIMEOUT_SECONDS,
    BatchSettings,
    EnvSettings,
    ServeSettings,
)

SERVER_PORT = 8080  # the platform's container contract
LIVENESS_PORT = 8081  # a model server pod's liveness probe (``server.liveness``)
# SIGTERM to SIGKILL for a model server (its pod's terminationGracePeriodSeconds, its process
# under ``up``): past the gateway's invocation timeout, so a replica scaled in or replaced
# finishes what it holds (it has left the gateway's table and its Service first)
SERVER_STOP_GRACE_SECONDS = int(GATEWAY_INVOCATION_TIMEOUT_SECONDS) + 10


def env_name(settings: type[EnvSettings], name: str) -> str:
    """``env_name(ServeSettings, "model_uri") == "INFERMODES_SERVE_MODEL_URI"``; a field the
    class does not have is an error, not a variable nobody reads."""
    if name not in settings.model_fields:
        raise KeyError(f"{settings.__name__} has no setting {name!r}")
    prefix = str(settings.model_config.get("env_prefix", ""))
    return f"{prefix}{name}".upper()


def env_value(value: object) -> str:
    """How a settings class reads a value back: booleans as true/false, lists and dicts as
    JSON, everything else as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def settings_env(settings: type[EnvSettings], **values: object) -> dict[str, str]:
    """The environment that makes ``settings()`` read ``values`` (None values are left out,
    so the class's default applies)."""
    return {
        env_name(settings, name): env_value(value)
        for name, value in values.items()
        if value is not None
    }


@dataclass(frozen=True)
class ProcessPlan:
    """A process to run: its command and the environment it reads its settings from."""

    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


def replica_memory_bytes(spec: EndpointSpec) -> int:
    """The memory of each replica of a realtime or serverless endpoint (its pod's limit): a
    serverless one's ``memorySizeInMB``, a realtime one's ``resources.memory``."""
    if spec.mode is Mode.SERVERLESS:
        return spec.serverless_block().memory_size_in_mb * 1024 * 1024
    return quantity_bytes(spec.realtime_block().resources.memory)


def model_server(
    spec: EndpointSpec, workers: int, port: int = SERVER_PORT, predict_threads: int | None = None
) -> ProcessPlan:
    """``infermodes serve`` for an endpoint's model (its bind address is the actuator's:
    the pod IP on Kubernetes, loopback locally), within its replica's memory (under ``up``,
    where nothing enforces it, the same figure)."""
    return ProcessPlan(
        ("infermodes", "serve"),
        settings_env(
            ServeSettings,
            port=port,
            model_uri=spec.model.uri,
            workers=workers,
            predict_threads=predict_threads,
            allow_pickle=spec.model.allow_pickle,  # pinned: the Secret's envFrom must not set it
            inference_output=spec.model.inference_output,
            memory_bytes=replica_memory_bytes(spec),
        ),
    )


SERVERLESS_MB_PER_CPU = 2048  # vCPU in proportion to memory, as the managed platform gives


def serverless_server(spec: EndpointSpec, port: int = SERVER_PORT) -> ProcessPlan:
    """A serverless replica: one worker with one model copy; XGBoost threads follow the CPU
    that its memory size buys (one per full CPU), for large requests."""
    memory = spec.serverless_block().memory_size_in_mb
    return model_server(
        spec, workers=1, port=port, predict_threads=max(1, memory // SERVERLESS_MB_PER_CPU)
    )


def replica_template(spec: EndpointSpec) -> str:
    """A digest of what a serverless replica serves (its mode, image, memory, the Secret its
    model is read with, and process: its model and the settings it reads), not of how many run
    (``maxConcurrency``, ``idleTimeoutSeconds``, provisioned concurrency): a new one loads its
    model once before the endpoint takes requests (``status.serverless_phase``)."""
    secret = spec.storage_secret_ref
    served = {"mode": spec.mode.value, "image": spec.image or "",
              "memory": spec.serverless_block().memory_size_in_mb,
              "storageSecret": secret.model_dump(mode="json") if secret is not None else None,
              "process": dataclasses.asdict(serverless_server(spec))}  # fmt: skip
    text = json.dumps(served, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


BATCH_METRICS_PORT = 9090
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# how often a batch instance that failed runs again, and the exits no run mends (the same
# input fails the same way): the operator's Job says it (backoffLimitPerIndex, a
# podFailurePolicy), ``up`` asks ``batch_instance_runs_again``
BATCH_INSTANCE_RETRIES = 2
PERMANENT_BATCH_EXIT_CODES = (EXIT_CANNOT_START, EXIT_MODEL_LOAD_FAILED, EXIT_OBJECTS_FAILED)


def batch_instance_runs_again(exit_code: int | None, failures: int) -> bool:
    """Whether a batch instance that ended with ``exit_code`` before it finished (killed: the
    OOM killer, a crash), its ``failures``-th failure, runs again: it skips what its job wrote
    and does the rest, as the Job's retry of its index does on a cluster."""
    failed = exit_code not in (None, 0, *PERMANENT_BATCH_EXIT_CODES)
    return failed and failures <= BATCH_INSTANCE_RETRIES


def batch_instance(spec: EndpointSpec, run_id: str) -> ProcessPlan:
    """``infermodes batch`` for one instance of a batch endpoint; the instance's index comes
    from ``JOB_COMPLETION_INDEX`` (an Indexed Job sets it; a local actuator sets it too), and
    the summary goes to the termination message, where the operator reads it. ``run_id``
    names this job (outputs from before it are written over), unless it keeps them."""
    block = spec.batch_block()
    processing = block.data_processing
    return ProcessPlan(
        ("infermodes", "batch"),
        settings_env(
            BatchSettings,
            model_uri=spec.model.uri,
            input_uri=block.input.uri,
            input_data_type=block.input.data_type,
            content_type=block.input.content_type,
            compression_type=block.input.compression_type,
            split_type=block.input.split_type,
            output_uri=block.output.uri,
            run_id=run_id,  # names the job's one input listing, also when keeping outputs
            keep_existing=block.output.keep_existing or None,
            accept=block.output.accept,
            assemble_with=block.output.assemble_with,
            batch_strategy=block.batch_strategy,
            max_payload_in_mb=block.max_payload_in_mb,
            max_concurrent_transforms=block.max_concurrent_transforms,
            invocations_max_retries=block.invocations_max_retries,
            invocations_timeout_in_seconds=block.invocations_timeout_in_seconds,
            input_filter=processing.input_filter,
            output_filter=processing.output_filter,
            join_source=processing.join_source,
            instance_count=block.instance_count,
            metrics_port=BATCH_METRICS_PORT,
            termination_message_path=TERMINATION_MESSAGE_PATH,
            allow_pickle=spec.model.allow_pickle,  # pinned: the Secret's envFrom must not set it
            memory_bytes=quantity_bytes(block.resources.memory),  # under ``up``: one cgroup
        ),
    )
