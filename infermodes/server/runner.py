"""Process model of ``infermodes serve``: one listening socket, N forked worker processes.

Forking after the imports (rather than uvicorn's spawn-based workers, which re-import
everything in each child) keeps cold start to one interpreter start. Each worker loads the
model itself in the background and answers ``/ping`` 503 until it has; one that replaces a
crashed worker while others serve loads the model first and only then takes connections, so
no request meets it unready (the socket is shared: it would get its share). Predictions run with
one XGBoost thread per worker, so workers do not oversubscribe the cores.

Heavy imports happen inside functions: the multiprocess metrics directory must be in the
environment before ``prometheus_client`` is first imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infermodes.errors import EXIT_MODEL_LOAD_FAILED

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from infermodes.server.liveness import LivenessTable, WorkerBeat
    from infermodes.settings import ServeSettings

log = logging.getLogger("infermodes.serve")

RESTART_BACKOFF_SECONDS = 1.0
ORPHAN_CHECK_SECONDS = 0.5  # how often the liveness process checks its supervisor is there


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def python_read_budgets(settings: ServeSettings) -> dict[str, int]:
    """The memory each input type's Python reader may take in this worker (the JSON bodies
    the native decoder does not take, the CSV bodies the native reader does not, every libsvm
    and RecordIO body), measured once its model is loaded: its share of the memory left once
    every worker holds what this one does, since every worker may read one at once, and never
    less than a small body's (``memory.MIN_INPUT_CAP`` bytes at the reader's cost per byte).
    A body's estimated cost (``codecs.PYTHON_READ_COST``) is held to it. One at a time per
    worker: the event loop decodes bodies under ``offload_bytes`` one by one, and a thread
    the larger ones, one at a time (a body decoded on the loop beside it is under
    ``offload_bytes``: 6 MiB at most at 64 KiB). Empty when the memory is unknown."""
    from infermodes.predict.codecs import PYTHON_READ_COST
    from infermodes.predict.memory import memory_share, read_budgets

    share = memory_share(settings.memory_bytes, settings.workers, settings.workers)
    if share is None:
        return {}
    budgets = read_budgets(share, PYTHON_READ_COST)
    for content_type, budget in budgets.items():
        log.info("%s bodies read in Python may take %d bytes of memory", content_type, budget)
    return budgets


def run_worker(
    settings: ServeSettings,
    sock: socket.socket,
    load_first: bool = False,
    beat: WorkerBeat | None = None,
) -> int:
    """Serve on an already-bound socket until told to stop; returns the exit code.
    ``load_first``: take no connection before the model is loaded (others answer meanwhile);
    ``beat``: the worker's slot of the liveness table, which its loop ticks."""
    import uvicorn

    from infermodes.http import uvicorn_options
    from infermodes.metrics import MULTIPROCESS_ENV, use_forked_worker_values
    from infermodes.predict.model import XGBoostModel
    from infermodes.server.app import ModelSlot, create_app, load_failure

    if os.environ.get(MULTIPROCESS_ENV):
        use_forked_worker_values()  # forked before any metric exists: no per-update fork check
    slot = ModelSlot()
    server: uvicorn.Server | None = None

    def connections() -> int:
        return len(server.server_state.connections) if server is not None else 0

    app = create_app(settings, slot, connections=connections, beat=beat)
    options = uvicorn_options(
        settings.log_level,
        settings.header_timeout_seconds,
        settings.body_timeout_seconds,
        route=app.invocations,
    )
    # nothing reads the client's address: no X-Forwarded-For middleware around every request
    config = uvicorn.Config(app, **options, proxy_headers=False)
    server = uvicorn.Server(config)

    def load() -> XGBoostModel:
        model = XGBoostModel.load(
            settings.model_uri,
            allow_pickle=settings.allow_pickle,
            threads=settings.predict_threads,
            inference_output=settings.inference_output,
        )
        app.metrics.model_load_duration.set(model.load_seconds)
        app.invocations.batcher.time_one_row(model)
        app.invocations.memory_budgets = python_read_budgets(settings)
        log.info(
            "model %s loaded in %.3f s (%d features)",
            settings.model_uri,
            model.load_seconds,
            model.num_features,
        )
        return model

    def stop(reason: str) -> None:
        log.error("cannot load model: %s", reason)
        server.should_exit = True

    if not load_first:
        slot.load_in_background(load, stop)
    else:
        try:
            slot.model = load()
        except Exception as exc:  # anything: a worker that cannot serve must say so and exit
            log.error("cannot load model: %s", load_failure(exc))
            return EXIT_MODEL_LOAD_FAILED

    async def serve_ticking() -> None:
        ticking = None if beat is None else asyncio.create_task(beat.tick_forever())
        try:
            await server.serve(sockets=[sock])
        finally:
            if ticking is not None:
                ticking.cancel()

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # as server.run
        runner.run(serve_ticking())
    return EXIT_MODEL_LOAD_FAILED if slot.error else 0


@dataclass(frozen=True)
class Liveness:
    """The liveness port's table, shared with every worker forked after it, and its server,
    bound and listening."""

    table: LivenessTable
    server: WSGIServer


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT held (pending, not lost) while a child is forked and registered: a
    stop handled in between would miss the new child, and one handled by the child before it
    reset its handlers would run the supervisor's ``stop`` in it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def child_signals(interrupt: signal.Handlers) -> None:
    """A forked child's own handlers (SIGTERM ends it; SIGINT as ``interrupt``), then the
    stop signals its fork held, delivered now."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class Supervisor:
    """Forks workers, restarts ones that crash, and stops them all on SIGTERM/SIGINT. With a
    liveness port, its server runs in a child of its own, restarted likewise: the supervisor
    forks whenever a worker crashes, and a fork while another thread of it held a lock (a
    probe's thread writing to stderr, say) could leave the new worker blocked on it for good;
    so the supervisor holds no thread, and no worker inherits a probe's connection."""

    def __init__(
        self, settings: ServeSettings, sock: socket.socket, liveness: Liveness | None = None
    ) -> None:
        self.settings = settings
        self.sock = sock
        self.liveness = liveness
        self.children: dict[int, int] = {}  # pid -> worker index
        self.liveness_pid = 0  # the liveness server's process, while there is one
        self.stopping = False

    def spawn(self, index: int, load_first: bool = False) -> None:
        """Fork worker ``index``, unless stopping: a crashed worker's replacement forked after
        SIGTERM (during its back-off) would be told nothing and held the stop for ever."""
        if self.stopping:
            return
        beat = None
        if self.liveness is not None:
            from infermodes.server.liveness import WorkerBeat

            self.liveness.table.reset(index)  # a crashed worker's slot: not stalled as it loads
            beat = WorkerBeat(self.liveness.table, index)
        with stop_signals_held():
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    child_signals(signal.SIG_DFL)
                    if self.liveness is not None:
                        self.liveness.server.socket.close()  # probes are the liveness process's
                    code = run_worker(self.settings, self.sock, load_first, beat)
                finally:
                    os._exit(code)
            self.children[pid] = index

    def spawn_liveness(self, liveness: Liveness) -> None:
        """The liveness server's process: it serves until told to stop (SIGTERM, once every
        worker is gone: a draining server is still alive), or until the supervisor is gone
        (killed: no worker would be replaced any more, so the probe must fail, as it did when
        the port closed with the supervisor)."""
        if self.stopping:
            return
        supervisor = os.getpid()
        with stop_signals_held():
            pid = os.fork()
            if pid == 0:
                try:
                    child_signals(signal.SIG_IGN)  # a terminal's ^C is the supervisor's
                    self.sock.close()  # requests are the workers'
                    liveness.server.timeout = ORPHAN_CHECK_SECONDS
                    while os.getppid() == supervisor:
                        liveness.server.handle_request()
                finally:
                    os._exit(1)
            self.liveness_pid = pid

    def stop(self, signum: int, _frame: object = None) -> None:
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> int:
        from infermodes.metrics import worker_exited

        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        if self.liveness is not None:
            self.spawn_liveness(self.liveness)
        for index in range(self.settings.workers):
            self.spawn(index)
        exit_code = 0
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid == self.liveness_pid and self.liveness is not None:
                self.liveness_pid = 0
                if not self.stopping:
                    log.warning("the liveness server (pid %d) exited with %d; restarting",
                                pid, os.waitstatus_to_exitcode(status))  # fmt: skip
                    time.sleep(RESTART_BACKOFF_SECONDS)
                    self.spawn_liveness(self.liveness)
                continue
            if pid not in self.children:
                continue
            index = self.children.pop(pid)
            worker_exited(pid)
            if self.liveness is not None:
                self.liveness.table.reset(index)  # gone, not stalled: restarted, or stopping
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            if code == EXIT_MODEL_LOAD_FAILED:
                exit_code = code
                self.stop(signal.SIGTERM)
                continue
            log.warning("worker %d (pid %d) exited with %d; restarting", index, pid, code)
            time.sleep(RESTART_BACKOFF_SECONDS)
            self.spawn(index, load_first=bool(self.children))  # others serve while it loads
        self.stop_liveness()
        return exit_code

    def stop_liveness(self) -> None:
        if self.liveness_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.liveness_pid, signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.liveness_pid, 0)
            self.liveness_pid = 0


def preload_modules() -> None:
    """Import the serving stack once, before forking, so workers share it instead of each
    paying ~0.8 s of imports on a 2-core machine."""
    import uvicorn  # noqa: F401

    import infermodes.server.app  # noqa: F401
    from infermodes.predict.native import library

    library()


def serve(settings: ServeSettings) -> int:
    """Entry point of ``infermodes serve``; returns the process exit code."""
    from infermodes.logs import configure_logging
    from infermodes.settings import warn_of_unknown_variables

    configure_logging(settings.log_level)
    warn_of_unknown_variables(settings)
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:  # a busy port, an address not of this machine: the user's to fix
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror)
        return 1
    log.info("listening on %s:%d with %d worker(s)", settings.host, settings.port, settings.workers)
    liveness = None
    if settings.liveness_port:
        from infermodes.server.liveness import LivenessTable, liveness_server

        # made before the workers fork: they share the table
        table = LivenessTable(settings.workers)
        try:
            server = liveness_server(
                settings.host,
                settings.liveness_port,
                table,
                settings.liveness_stall_seconds,
                settings.liveness_prediction_seconds,
            )
        except OSError as exc:
            log.error(
                "cannot listen on %s:%d: %s", settings.host, settings.liveness_port, exc.strerror
            )
            return 1
        liveness = Liveness(table, server)
    if settings.workers == 1:  # this process serves and never forks: the port on a thread
        from infermodes.server.liveness import WorkerBeat

        beat = None
        if liveness is not None:
            beat = WorkerBeat(liveness.table, 0)
            threading.Thread(
                target=liveness.server.serve_forever, name="liveness-http", daemon=True
            ).start()
        return run_worker(settings, sock, beat=beat)
    from infermodes.metrics import shared_values_in

    metrics_dir = tempfile.mkdtemp(prefix="infermodes-metrics-")
    shared_values_in(metrics_dir)
    try:
        preload_modules()
        return Supervisor(settings, sock, liveness).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
