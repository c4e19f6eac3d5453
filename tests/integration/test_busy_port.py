"""``infermodes up`` and ``infermodes gateway`` on a port another process holds: each ends at
once, non-zero, naming the address, and ``up`` starts no child (which nothing would stop)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from pathlib import Path

import psutil

from infermodes.local.children import Registry
from tests.conftest import AbaloneModel
from tests.support.gateway import static_endpoint
from tests.support.local import manifest
from tests.support.processes import INFERMODES, stop_process, wait_until

WAIT = 30.0


def alive(process: psutil.Process) -> bool:
    """Running and not a zombie (``is_running`` also tells a reused PID apart)."""
    with contextlib.suppress(psutil.Error):
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    return False


def test_up_on_a_busy_port_exits_naming_it_and_starts_no_child(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """With a realtime manifest, whose model server would start at once: ``up``'s children
    are recorded while it runs, and none may be started (or outlive it)."""
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1)]
    state_dir, log_path = tmp_path / "state", tmp_path / "up.log"
    children: dict[int, psutil.Process] = {}
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [INFERMODES, "up", "--port", str(port), "--state-dir", str(state_dir),
                 "-f", str(files[0])],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        up = psutil.Process(proc.pid)

        def exited() -> bool:
            with contextlib.suppress(psutil.Error):
                children.update((c.pid, c) for c in up.children(recursive=True))
            return proc.poll() is not None

        try:
            wait_until(exited, WAIT, "infermodes up to exit", interval=0.01)
            survivors = [pid for pid, child in children.items() if alive(child)]
        finally:
            stop_process(proc)
            Registry(state_dir / "children.json").kill_orphans()
            for child in children.values():  # psutil will not signal a reused PID
                with contextlib.suppress(psutil.Error):
                    child.kill()
    text = log_path.read_text(errors="replace")
    assert proc.returncode != 0, text
    assert f"('127.0.0.1', {port})" in text and "address already in use" in text.lower(), text
    assert "started (pid" not in text, text
    assert survivors == [], text


def test_the_gateway_on_a_busy_port_exits_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "endpoints.json"
    endpoint = static_endpoint("abalone", "realtime", ["127.0.0.1:1"])
    config.write_text(json.dumps({"endpoints": [endpoint]}))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = subprocess.Popen(
            [INFERMODES, "gateway", "--static-endpoints", str(config), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            output, _ = proc.communicate(timeout=WAIT)
        finally:
            stop_process(proc)
    text = output.decode(errors="replace")
    assert proc.returncode != 0, text
    assert f"('127.0.0.1', {port})" in text and "address already in use" in text.lower(), text
