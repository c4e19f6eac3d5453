"""``infermodes up``: one process with the gateway's routes on one port (its own app and
proxy, fed by the supervisor instead of Kubernetes watches), the async accept route over the
embedded queue, the ``/_infermodes`` API, and the supervisor that runs every endpoint as local
processes. SIGTERM / Ctrl-C (SIGHUP, SIGQUIT too) drains the gateway, then stops every child."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from infermodes.gateway.app import Runner
from infermodes.gateway.async_accept import create_router as async_router
from infermodes.gateway.async_retention import Sweeper
from infermodes.local.access import ACCESS_KEY_ID, TokenFileError, start_token, token_guard
from infermodes.local.api import Tail, index_router
from infermodes.local.api import create_router as api_router
from infermodes.local.children import CHILD_SETTINGS
from infermodes.local.demand import LocalDemandSink
from infermodes.local.manifests import Manifest, Source, load_paths
from infermodes.local.platform_store import LocalPlatformStore
from infermodes.local.supervisor import Supervisor, killing_on_signal
from infermodes.logs import configure_logging
from infermodes.metrics import AsyncApiMetrics, OperatorMetrics
from infermodes.platform.router import create_router as platform_router
from infermodes.platform.translate import Defaults
from infermodes.queueing.broker import Enqueuer
from infermodes.queueing.connect import Broker, broker_from_url, embedded_url
from infermodes.queueing.embedded import EmbeddedQueue
from infermodes.settings import (
    AsyncEndpoint,
    GatewaySettings,
    unknown_reason,
    unknown_variables,
    variables_named,
    variables_of,
    warn_of_variables_unknown_to,
)
from infermodes.storage import Storage

log = logging.getLogger("infermodes.local")

GATEWAY_ID = "infermodes-up"
# a new replica's /ping is polled this often (the gateway's default is 50 ms, for pods): on
# loopback a probe costs ~0.1 ms, and a cold start waits for the next one after the model loads
PROBE_INTERVAL_SECONDS = 0.01
LOCAL_DEFAULTS = Defaults(resolved_image="infermodes/model-server:local-process", file_uris=True)


class StateDirUnusable(RuntimeError):
    """The state dir cannot be made or written (its message names it and why)."""


class StateDirBusy(StateDirUnusable):
    """Another ``up`` runs on this state dir (it would take the other's children for orphans)."""


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[tuple[int, int]]:
    """Make the state dir, private to its user, and hold ``<state dir>/lock`` while ``up`` runs;
    the kernel releases it when we die. Yields the lock file's (device, inode): the supervisor
    stops ``up`` once that file is no longer there (the state dir removed)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        keep_private(state_dir)
        file = (state_dir / "lock").open("a")
    except OSError as exc:
        raise StateDirUnusable(
            f"cannot use {state_dir} as the state dir: {exc.strerror or exc} (--state-dir picks "
            "another)"
        ) from None
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateDirBusy(f"another infermodes up is running on {state_dir}") from None
        info = os.fstat(file.fileno())
        yield info.st_dev, info.st_ino


def keep_private(state_dir: Path) -> None:
    """Its logs, queue (async payloads), records and batch summaries are the user's: a state dir
    of this user's that others may enter (made by an earlier version, or by hand) becomes 0700;
    one of another user's is left as it is (its token file is still checked)."""
    info = state_dir.stat()
    if info.st_uid == os.getuid() and info.st_mode & 0o077:
        state_dir.chmod(stat.S_IMODE(info.st_mode) & 0o700)
        log.info("%s was open to other users: it is 0700 now", state_dir)


# a closed terminal (SIGHUP) and its Ctrl-\ (SIGQUIT) reach ``up`` alone: each child has its own
# session; their default actions ended ``up`` at once and left every child running
STOPPING_SIGNALS = (signal.SIGHUP, signal.SIGQUIT)


def stopping_as_sigterm() -> None:
    """SIGHUP and SIGQUIT stop ``up`` as SIGTERM does: the gateway drains, then every child
    stops, and the state dir keeps the endpoints for the next start."""
    for signum in STOPPING_SIGNALS:
        signal.signal(signum, lambda _signum, _frame: signal.raise_signal(signal.SIGTERM))


# the INFERMODES_GATEWAY_* variables up reads: its gateway's settings take every other field
# from up itself (``gateway_options``) or keep its default, whatever its environment says
FROM_ENVIRONMENT = frozenset({
    "invocation_timeout_seconds", "realtime_max_payload_bytes", "serverless_max_payload_bytes",
    "probe_timeout_seconds", "upstream_idle_seconds", "max_idle_connections",
    "drain_delay_seconds", "drain_timeout_seconds", "sweep_interval_seconds",
    "max_inline_bytes", "publish_connections", "allowed_input_prefixes",
})  # fmt: skip
MANIFESTS = "its endpoints are its manifests"
OPEN = "its invocations are open to this machine: access keys are a cluster gateway's"
QUEUE = "its async requests go to its queue, or where --broker-url says"
# what up does instead of each setting it does not read, for the warning that names them
# (``unused_variables``); a unit test holds its keys to GatewaySettings' other fields
INSTEAD = {
    "host": "it listens on 127.0.0.1 alone",
    "port": "--port sets its port",
    "log_level": "--log-level sets it",
    "metrics_port": "its /metrics stay on its one port",
    "probe_interval_seconds": f"it probes a new process every {PROBE_INTERVAL_SECONDS:g} s",
    "namespaces": MANIFESTS,
    "static_endpoints": MANIFESTS,
    "gateway_id": "it records demand itself",
    "access_keys": OPEN,
    "access_keys_file": OPEN,
    "open_platform_api": "its platform API takes its token",
    "platform_namespace": "its platform API keeps its objects in its state dir",
    "platform_storage_secret": "the endpoints its platform API creates run with its environment",
    "platform_broker_secret": "the endpoints its platform API creates use its queue",
    "broker_url": QUEUE,
    "broker_url_file": QUEUE,
    "async_storage_prefixes": "its async endpoints store where their manifests say",
}


class UpGatewaySettings(GatewaySettings):
    """The settings of up's gateway: of the environment only ``FROM_ENVIRONMENT``'s
    variables. Another of a cluster gateway's settings, half-used, misled: async storage
    prefixes warned of a chart value up has not, and refused nothing."""

    @classmethod
    def _from_environment(cls, given: dict[str, Any]) -> dict[str, Any]:
        not_read = dict.fromkeys(cls.model_fields.keys() - FROM_ENVIRONMENT)
        return super()._from_environment({**not_read, **given})


def unused_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """Each ``INFERMODES_GATEWAY_*`` variable of ``environ`` up does not read (in any case, as
    a gateway reads them), to what up does instead, or, for one no gateway reads, what every
    process says of it (``unknown_reason``)."""
    fields = variables_of(GatewaySettings)
    unused = {
        variable: INSTEAD[field]
        for variable in environ
        if (field := fields.get(variable.upper())) in INSTEAD
    }
    for variable in unknown_variables(GatewaySettings, environ):
        unused[variable] = unknown_reason(GatewaySettings, variable)
    return dict(sorted(unused.items()))


def warn_of_unused_variables(environ: Mapping[str, str]) -> None:
    """One warning at up's start naming each ``unused_variables`` entry, never its value."""
    if unused := unused_variables(environ):
        log.warning(
            "infermodes up does not use these variables of its environment: %s",
            variables_named(unused),
        )


def gateway_options(port: int, log_level: str) -> dict[str, object]:
    """The settings of up's gateway that are up's, not the user's: with the flags the user
    gave, and the ``INFERMODES_GATEWAY_*`` variables it reads (``FROM_ENVIRONMENT``), they
    make its ``UpGatewaySettings``.
    Its ``/metrics`` stay on its one port, on loopback, beside everything else it serves."""
    return {"port": port, "host": "127.0.0.1", "log_level": log_level,
            "probe_interval_seconds": PROBE_INTERVAL_SECONDS, "metrics_port": 0}  # fmt: skip


def serve(
    settings: GatewaySettings,
    state_dir: Path,
    files: list[Source],
    broker_url: str | None = None,
    management_url: str | None = None,
) -> int:
    """Entry point of ``infermodes up``; manifests are checked before anything starts (a bad
    one raises ``ManifestError``). Async requests go to the embedded queue in the state dir,
    or to the broker ``broker_url`` names (RabbitMQ, with ``management_url`` for in-flight
    figures)."""
    configure_logging(settings.log_level)
    warn_of_unused_variables(os.environ)
    for settings_class in CHILD_SETTINGS:  # for all its processes, which are not told them
        warn_of_variables_unknown_to(settings_class, os.environ)
    manifests = load_paths(files)
    with state_lock(state_dir) as lock_id:
        return _serve(settings, state_dir, manifests, broker_url, management_url, lock_id)


def mount_async_route(
    runner: Runner,
    layouts: Mapping[str, AsyncEndpoint],
    enqueuer: Enqueuer,
    registry: CollectorRegistry,
) -> None:
    """The async accept route on up's gateway, told of endpoints gone as the gateway's is:
    their metric series and log throttles go with them (kept, they grew with every endpoint
    ever deleted)."""
    settings, table, demand = runner.settings, runner.table, runner.demand
    async_metrics = AsyncApiMetrics(registry)
    table.forgotten.append(async_metrics.forget)  # as the invocations' series go
    runner.app.include(async_router(
        layouts, enqueuer, Storage(), async_metrics,
        settings.max_inline_bytes, settings.allowed_input_prefixes,
        missing=table.async_missing,
        # a pool at zero hears of its first request, as on Kubernetes
        accepted=demand.async_accepted if demand is not None else None,
        allowed_from=GatewaySettings.env_names("allowed_input_prefixes")[0],
        forgotten=table.forgotten,
    ))  # fmt: skip


def _serve(
    settings: GatewaySettings,
    state_dir: Path,
    manifests: list[Manifest],
    broker_url: str | None,
    management_url: str | None,
    lock_id: tuple[int, int],
) -> int:
    import uvloop

    try:
        token, token_file = start_token(state_dir)
    except TokenFileError as exc:
        raise StateDirUnusable(str(exc)) from None
    tail: Tail | None = None
    if broker_url is None:
        queue_file = (state_dir / "queue.db").resolve()
        embedded = EmbeddedQueue(queue_file)  # the workers open the same file by its URL
        broker: Broker = embedded
        url, tail = embedded_url(queue_file), embedded.tail
    else:
        broker, url = broker_from_url(broker_url, management_url), broker_url
    port = settings.port
    supervisor = Supervisor(state_dir.resolve(), broker, url, port)
    supervisor.lock_id = lock_id
    supervisor.load_state()
    store = LocalPlatformStore(state_dir, supervisor)
    store.refuse_taking_over(manifests, "up -f")  # before any is applied
    manifests = [supervisor.placed(manifest) for manifest in manifests]  # or NameTaken
    for manifest in manifests:
        supervisor.apply(manifest, starting=True)
    registry = CollectorRegistry()
    supervisor.metrics = OperatorMetrics(registry)  # the operator's async gauges, on /metrics
    enqueuer = broker.enqueuer(supervisor.max_attempts, settings.publish_connections)
    routers = [
        api_router(supervisor, tail, store.refuse_taking_over),
        index_router(f"http://127.0.0.1:{port}", token_file, ACCESS_KEY_ID),
        platform_router(store, LOCAL_DEFAULTS),
    ]
    runner = Runner(settings, supervisor, LocalDemandSink(supervisor), GATEWAY_ID, registry,
                    routers, namespaced=False)  # fmt: skip
    runner.app.guard = token_guard(token, token_file)  # its API and platform API: its user's
    mount_async_route(runner, supervisor.async_layouts, enqueuer, registry)
    # the async plane's stale request records, claims and inline inputs, as the gateway's
    sweeper = Sweeper(Storage(), supervisor.async_layouts, settings.sweep_interval_seconds)
    sweeper.start()
    # the runner says where, once it listens; the token's file is named, never the token
    log.info("infermodes up, state in %s, its token in %s", state_dir, token_file)
    stopping_as_sigterm()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
            return loop.run(runner.run())
    finally:
        sweeper.stop()
        with killing_on_signal(supervisor.kill_all):
            supervisor.stop_all()  # a no-op after a clean drain; otherwise nothing may outlive us
        enqueuer.close()
