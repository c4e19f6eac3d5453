"""Start real processes for tests and make sure they end: every helper here kills by PID."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
INFERMODES = str(Path(sys.executable).parent / "infermodes")


# /proc/stat's first line: CPU time of the whole machine by state (guest time, which follows,
# is already counted in user)
MACHINE_STATES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
BUSY_STATES = ("user", "nice", "system", "irq", "softirq")


def machine_cpu_seconds() -> dict[str, float]:
    """CPU seconds of the whole machine since boot by state, summed over cores: what processes
    kept busy, what was idle, what waited on a disk, what the hypervisor took (steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    counted = fields[: len(MACHINE_STATES)]
    return {state: int(v) / ticks for state, v in zip(MACHINE_STATES, counted, strict=True)}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


_LASTING: set[int] = set()  # given by lasting_port: never twice in one session


def lasting_port(host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A free port below the kernel's ephemeral range, for a server a test stops and starts
    again on the same port: a port of that range (``free_port``) may be given meanwhile to a
    client's outgoing connection (one retrying the stopped server, say), and the restart then
    fails with EADDRINUSE."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(attempts):
        port = random.randrange(10000, max(10001, low))
        if port in _LASTING:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _LASTING.add(port)
        return port
    raise RuntimeError(f"no free port in 10000..{low - 1} after {attempts} tries")


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """SIGTERM, wait, then SIGKILL the process group; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    # workers of a dead supervisor must not outlive it
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


class ServerProcess:
    """A running ``infermodes serve``; ``log`` holds its stderr once it has stopped."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


def start_server(
    args: list[str], log_path: Path, env: dict[str, str] | None = None, port: int | None = None
) -> ServerProcess:
    port = port or free_port()
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [INFERMODES, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    return ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)


@contextlib.contextmanager
def running_server(
    args: list[str], log_path: Path, env: dict[str, str] | None = None, timeout: float = 60.0
) -> Iterator[ServerProcess]:
    server = start_server(args, log_path, env)
    try:
        wait_until(
            lambda: server.proc.poll() is not None or server.ready(), timeout, "the model server"
        )
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log}")
        yield server
    finally:
        stop_process(server.proc)
