"""A model-server "zygote" for ``infermodes up``: one process that has imported the serving
stack once (pydantic settings, uvicorn, FastAPI, numpy, the XGBoost library) and forks an
``infermodes serve`` of a serverless endpoint from it on request (its settings all come from
the environment, as the process plan gives them), so a cold start pays a fork and a model load
instead of an interpreter start and ~0.3 s (more on a loaded machine) of imports.

Protocol, one JSON line each way over the zygote's stdin/stdout: ``{"env", "log"}`` in,
the new server's PID out (``"ready"`` first, once the imports are done). The server is forked
twice so that it is orphaned at once and adopted by ``up``, which has made itself the child
subreaper: ``up`` waits for it, signals its process group and reads its exit code as for any
child it started itself (``Forked``). The PID is sent only after the middle process was
reaped, so by then the server is ``up``'s child."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

log = logging.getLogger("infermodes.local")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
READY = "ready"
# a fork takes milliseconds; beyond this the zygote is stuck (stopped, say), and up's loop,
# which waits for its answer, serves no other request meanwhile: it froze the gateway for 5 s
SPAWN_TIMEOUT_SECONDS = 1.0
IMPORT_WAIT_SECONDS = 10.0  # servers wait this long for its imports, then start by exec


def prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process (Linux), not to init."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def preload() -> None:
    """What ``infermodes serve`` imports before it answers (see ``server.runner``)."""
    import infermodes.predict.model
    import infermodes.settings  # noqa: F401
    from infermodes.server.runner import preload_modules

    preload_modules()


def become_server(request: dict[str, Any]) -> None:
    """In the grandchild: a session of its own, the log as stdout/stderr, the request's
    environment, then what ``infermodes serve`` runs; never returns."""
    code = 1
    try:
        os.setsid()  # signal handlers are a fresh interpreter's: the zygote sets none
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.environ.clear()
        os.environ.update(request["env"])
        from infermodes.server.runner import serve
        from infermodes.settings import ServeSettings

        sys.argv = ["infermodes", "serve"]
        # every setting from the environment, which pydantic's mypy plugin cannot know of
        code = serve(ServeSettings())  # type: ignore[call-arg]
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except BaseException:  # never back into the zygote's loop: the reason goes to the log
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def fork_server(request: dict[str, Any]) -> int:
    """Fork the server through a middle process that exits at once; returns its PID."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(read_end)
        server = os.fork()
        if server == 0:
            os.close(write_end)
            become_server(request)
        os.write(write_end, f"{server}\n".encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.readline()
    os.waitpid(middle, 0)  # reaped: the server is re-parented to the subreaper now
    return int(answer)


def main() -> None:
    """Entry point of the zygote process (``python -m infermodes.local.zygote``)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # up gone (even SIGKILLed): so is the zygote
    preload()
    print(READY, flush=True)
    for line in sys.stdin:
        print(fork_server(json.loads(line)), flush=True)


class Zygote:
    """``up``'s handle on its zygote process; ``spawn`` falls back to ``None`` (start the
    server the ordinary way) while the zygote is still importing or after it died."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.started = False
        self.started_at = 0.0
        self.ready = False

    def start(self) -> None:
        """Start it (its imports take a moment: until then servers start by exec)."""
        become_subreaper()
        self.started, self.started_at = True, time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infermodes.local.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def importing(self) -> bool:
        """Still importing, for a short while yet: a server to start had better wait for it."""
        if self.check() or self.proc is None or self.proc.poll() is not None:
            return False
        return time.monotonic() - self.started_at < IMPORT_WAIT_SECONDS

    def check(self) -> bool:
        """Whether it can fork now (its imports done); never blocks."""
        proc = self.proc
        if proc is None or proc.poll() is not None or proc.stdout is None:
            return False
        if not self.ready and select.select([proc.stdout], [], [], 0)[0]:
            self.ready = proc.stdout.readline().strip() == READY
            if self.ready:
                log.info("model-server zygote ready (pid %d)", proc.pid)
        return self.ready

    def spawn(self, env: dict[str, str], log_path: str) -> int | None:
        """The PID of a new server forked from the zygote, or None when it cannot fork now."""
        proc = self.proc
        if not self.check() or proc is None or proc.stdin is None or proc.stdout is None:
            return None
        try:
            os.set_blocking(proc.stdout.fileno(), True)  # an event loop's reader may have unset it
            proc.stdin.write(json.dumps({"env": env, "log": log_path}) + "\n")
            proc.stdin.flush()
            if select.select([proc.stdout], [], [], SPAWN_TIMEOUT_SECONDS)[0]:
                return int(proc.stdout.readline())
        except (OSError, ValueError):
            pass
        log.warning("the model-server zygote did not fork; stopping it, servers start by exec")
        self.stop(grace=0.0)
        return None

    def stop(self, grace: float = 5.0) -> None:
        """Let it end (EOF on its stdin), SIGKILL after ``grace``; it is not started again."""
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # EOF: the zygote's loop ends
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5.0)
        self.proc = None


def reap_adopted(known: set[int]) -> None:
    """Reap processes re-parented to us that we did not start (a killed server's forked
    workers): they would stay zombies. Stops at the first one we started, which its own
    ``poll`` reaps; the rest wait for the next call."""
    for _ in range(100):
        try:
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if found is None or found.si_pid in known:
            return
        os.waitpid(found.si_pid, 0)


class Forked:
    """A server forked by the zygote and adopted by this process: what ``Child`` uses of a
    ``Popen`` (pid, returncode, poll, wait), by ``waitpid``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # not ours to wait for: treat it as gone
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.01)
        return code


if __name__ == "__main__":
    main()
