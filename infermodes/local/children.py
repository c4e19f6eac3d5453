"""Child processes of ``infermodes up``: started from the operator's process plans, each in
its own process group (so its forked workers stop with it), logged to a file under the state
dir, restarted with back-off when it dies, and stopped by its PID: SIGTERM to the group, then
SIGKILL after a grace period.

The groups of the running children are recorded in ``children.json``, so an ``up`` that was
killed (SIGKILL leaves no time to stop anything) removes its orphans when it starts again."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from infermodes.endpoints.plan import ProcessPlan
from infermodes.local.zygote import Forked, Zygote
from infermodes.settings import (
    BatchSettings,
    EnvSettings,
    ServeSettings,
    WorkerSettings,
    unknown_variables,
)
from infermodes.storage import write_local

log = logging.getLogger("infermodes.local")

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0
KILL_WAIT_SECONDS = 5.0  # a SIGKILLed process is gone within this


# the settings of the processes up runs: up names, once at its start, the variables of its
# environment under their prefixes that none of them reads (``up.serve``), and does not pass
# them on (``child_environment``): each child named them again, N endpoints' N times, and
# again at each restart
CHILD_SETTINGS: tuple[type[EnvSettings], ...] = (ServeSettings, WorkerSettings, BatchSettings)


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the variables a child would only warn of (``CHILD_SETTINGS``)."""
    unknown = {name for kind in CHILD_SETTINGS for name in unknown_variables(kind, environ)}
    return {name: value for name, value in environ.items() if name not in unknown}


def executable(command: tuple[str, ...]) -> list[str]:
    """``infermodes`` is this interpreter's own script, so children run the same install."""
    if command[0] != "infermodes":
        return list(command)
    beside = Path(sys.executable).parent / "infermodes"
    found = str(beside) if beside.exists() else shutil.which("infermodes")
    if found is None:
        raise RuntimeError("the infermodes command is not installed beside this interpreter")
    return [found, *command[1:]]


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command's name (from its state on)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat): with the PID, it
    names one process, whatever PIDs were reused since."""
    fields = _stat(pid)
    return None if fields is None else fields[19]


def still_runs(pid: int, start: str) -> bool:
    """Whether the process with this PID and start time runs: not one that exited and that
    its parent has not reaped yet (a zombie: an ``up`` killed a moment ago, say)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X") and fields[19] == start


class Running(Protocol):
    """What a child's process is to us: a ``Popen``, or a server forked by the zygote."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class Child:
    """One supervised process. ``exits`` counts unexpected ends; after each the next start
    waits ``backoff`` (doubling, reset once a run lasted a minute)."""

    key: str  # e.g. "abalone/server-0": unique within the supervisor
    plan: ProcessPlan
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    restart: bool = True  # False: a run to completion (batch instances)
    zygote: Zygote | None = None  # forks it when it can (``infermodes serve`` only)
    proc: Running | None = None
    started_at: float = 0.0
    exits: int = 0
    last_exit: int | None = None
    not_before: float = 0.0
    backoff: float = BACKOFF_FIRST_SECONDS
    stopping: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, now: float) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**child_environment(os.environ), **self.plan.env, **self.extra_env}
        with self.log_path.open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting\n".encode())
        forked = self._fork(env)
        if forked is not None:
            self.proc = Forked(forked)
        else:
            self.proc = self._exec(env)
        self.started_at = now
        log.info("%s started (pid %d%s)", self.key, self.proc.pid,
                 ", forked" if forked is not None else "")  # fmt: skip

    def _fork(self, env: dict[str, str]) -> int | None:
        if self.zygote is None or self.plan.command != ("infermodes", "serve"):
            return None
        return self.zygote.spawn(env, str(self.log_path))

    def _exec(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as out:
            return subprocess.Popen(
                executable(self.plan.command),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check(self, now: float) -> bool:
        """True when the process ended since the last check; a crash schedules a restart."""
        if self.proc is None or self.proc.poll() is None:
            return False
        code = self.proc.returncode
        with contextlib.suppress(ProcessLookupError, PermissionError):  # its forked workers
            os.killpg(self.proc.pid, signal.SIGKILL)  # must not outlive it (an OOM kill, say)
        self.proc = None
        self.last_exit = code
        if self.stopping:
            return True
        if self.restart or code != 0:
            self.exits += 1
        if now - self.started_at >= 60.0:
            self.backoff = BACKOFF_FIRST_SECONDS
        self.not_before = now + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_SECONDS)
        ended = code == 0 and not self.restart  # a batch instance that finished its share
        log.log(logging.INFO if ended else logging.WARNING, "%s exited with %d", self.key, code)
        return True

    def signal(self, signum: int) -> None:
        """To its process group, so its forked workers get it too; to the process itself
        while it leads no group yet (a server the zygote forked, before its ``setsid``),
        or a stop in that moment would reach nothing."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                try:
                    os.killpg(self.proc.pid, signum)
                except ProcessLookupError:
                    os.kill(self.proc.pid, signum)

    def stop(self) -> None:
        """Ask it to drain and stop (SIGTERM to its group); ``reap`` finishes the stop."""
        self.stopping = True
        self.signal(signal.SIGTERM)

    def reap(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Wait for a stopping process, SIGKILL its group after ``grace``; then its group
        again, so no forked worker outlives it."""
        if self.proc is None:
            return
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(KILL_WAIT_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


class Registry:
    """``children.json``: the process groups of running children, by PID and start time, and
    the ``up`` that started them (its PID and start time too)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.saved: set[tuple[str, int]] | None = None

    def save(self, children: list[Child]) -> None:
        """Record the running children (written only when they changed)."""
        running = {(c.key, c.pid) for c in children if c.pid is not None}
        if running == self.saved:
            return
        self.saved = running
        entries = [{"key": key, "pid": pid, "start": start_time(pid)} for key, pid in running]
        owner = {"pid": os.getpid(), "start": start_time(os.getpid())}
        write_local(self.path, json.dumps({"owner": owner, "children": entries}).encode())

    def kill_orphans(self) -> list[str]:
        """SIGKILL the groups a previous ``up`` left running (only processes whose PID and
        start time both match what it recorded); returns their keys. Not while the ``up`` that
        recorded them runs: a copy of a live state dir names the live one's children."""
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        owner, entries = _recorded(document)
        if owner is not None and owner[0] != os.getpid() and still_runs(*owner):
            log.warning("%s names the children of infermodes up (pid %d), which still runs: "
                        "left alone (a copy of its state dir?)", self.path, owner[0])  # fmt: skip
            self.path.unlink(missing_ok=True)
            return []
        killed = []
        for key, pid, start in entries:
            if start is not None and start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                killed.append(key)
        self.path.unlink(missing_ok=True)
        return killed


def _recorded(
    document: object,
) -> tuple[tuple[int, str] | None, list[tuple[str, int, str | None]]]:
    """The owner and the children a ``children.json`` names (a list alone: an older ``up``'s);
    entries that are not what ``save`` writes are left out."""
    owner = None
    entries: object = document
    if isinstance(document, dict):
        found = document.get("owner")
        if isinstance(found, dict) and _is_pid(found.get("pid")) and found.get("start"):
            owner = (int(found["pid"]), str(found["start"]))
        entries = document.get("children")
    children = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and _is_pid(entry.get("pid")):
            start = entry.get("start")
            children.append((str(entry.get("key")), int(entry["pid"]),
                             str(start) if start is not None else None))  # fmt: skip
    return owner, children


def _is_pid(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
