"""``infermodes up`` as a real process for tests: manifests made from the example files with
the test's model and folders, the process started and stopped by PID, and any child a killed
``up`` left behind removed by the record it keeps."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from infermodes.local.access import read_token
from infermodes.local.children import Registry
from tests.support.processes import INFERMODES, REPO, free_port, stop_process, wait_until

EXAMPLES = REPO / "examples" / "abalone"
EXAMPLE_MODEL = "file:///var/lib/infermodes/models/abalone/model.tar.gz"


def document(mode: str, model: Path, folder: Path, **spec_block: Any) -> dict[str, Any]:
    """The example manifest of ``mode`` with the test's model, its own storage under
    ``folder`` and ``spec_block`` merged into its mode's block."""
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{mode}.yaml").read_text())
    document["spec"]["model"]["uri"] = f"file://{model}"
    block = document["spec"][mode]
    if mode == "async":
        block["outputPath"] = f"file://{folder}/async/output"
    if mode == "batch":
        block["input"]["uri"] = f"file://{folder}/batch/input/"
        block["output"]["uri"] = f"file://{folder}/batch/output/"
    block.update(spec_block)
    return document


def manifest(mode: str, model: Path, folder: Path, **spec_block: Any) -> Path:
    """``document`` written into ``folder``."""
    path = folder / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(document(mode, model, folder, **spec_block)))
    return path


def laughs(levels: int, text: str) -> str:
    """A "billion laughs" before the manifest ``text`` (whose ``spec`` comes last, its fields
    indented two spaces): each level an anchored list of nine aliases of the one before, the
    last under ``spec.extra`` (9**9 nodes for 9 levels, in under 500 bytes)."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{n}: &l{n} [{','.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n" + text + f"  extra: *l{levels - 1}\n"


class Up:
    """A running ``infermodes up`` and its API."""

    def __init__(
        self,
        port: int,
        state_dir: Path,
        files: list[Path],
        log_path: Path,
        args: list[str],
        stdin: bytes | None = None,
    ) -> None:
        """``stdin``: what ``up`` reads on standard input (for ``-f -``), then its end."""
        self.stdin = stdin
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.state_dir = state_dir
        self.files = files
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.token_file = state_dir / "token"  # up writes it at start (local/access.py)

    @property
    def headers(self) -> dict[str, str]:
        """What a request to ``up``'s API carries: its token, as the CLI sends it."""
        return {"authorization": f"Bearer {read_token(self.token_file)}"}

    @property
    def cli_env(self) -> dict[str, str]:
        """The environment the CLI finds this ``up`` with (its URL and token file)."""
        return {**os.environ, "INFERMODES_UP_URL": self.url,
                "INFERMODES_UP_TOKEN_FILE": str(self.token_file)}  # fmt: skip

    def start(self) -> None:
        args = [INFERMODES, "up", "--port", str(self.port), "--state-dir", str(self.state_dir)]
        for file in self.files:
            args += ["-f", str(file)]
        args += self.args
        with self.log_path.open("ab") as log:
            piped = None if self.stdin is None else subprocess.PIPE
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=piped,
                                         start_new_session=True)  # fmt: skip
        if self.proc.stdin is not None:
            with self.proc.stdin:
                self.proc.stdin.write(self.stdin or b"")
        wait_until(lambda: self.exited() or self.ready(), 60, "infermodes up")
        if self.exited():
            raise RuntimeError(f"infermodes up exited:\n{self.log}")

    def exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Stop ``up`` with ``signum``; SIGKILL leaves its children running, as it would."""
        assert self.proc is not None
        if signum == signal.SIGKILL:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            return self.proc.returncode
        return stop_process(self.proc, grace=30.0)

    def endpoint(self, name: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_infermodes/endpoints/{name}", timeout=10.0,
                             headers=self.headers)  # fmt: skip
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.endpoint(name)["status"]
        return status

    def running(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.status(name)["processes"] if p["running"]]

    def invoke(self, name: str, body: bytes, path: str = "invocations") -> httpx.Response:
        return httpx.post(f"{self.url}/endpoints/{name}/{path}", content=body,
                          headers={"content-type": "text/csv"}, timeout=90.0)  # fmt: skip


@contextlib.contextmanager
def running_up(
    state_dir: Path,
    files: list[Path],
    log_path: Path,
    args: tuple[str, ...] = (),
    stdin: bytes | None = None,
) -> Iterator[Up]:
    """``up`` running (with more command-line ``args``, and ``stdin`` on its standard input);
    at the end it is stopped and nothing it started is left."""
    up = Up(free_port(), state_dir, files, log_path, list(args), stdin)
    try:
        up.start()
        yield up
    finally:
        if up.proc is not None:
            stop_process(up.proc, grace=30.0)
        Registry(state_dir / "children.json").kill_orphans()
