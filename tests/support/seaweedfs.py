"""A real S3-compatible store for tests: SeaweedFS's S3 gateway (``weed server -s3``) on
loopback ports, with its data in a temporary folder.

Debian has no ``seaweedfs-bin`` package for this release, so ``ensure_installed`` builds the
``weed`` binary once from SeaweedFS's Go module (pinned below; about 7 minutes on 2 cores, then
cached under ``~/.cache/infermodes/seaweedfs/<version>/``). ``go install`` refuses a module
whose go.mod has replace directives, so we build from a copy of the module, as the main module.
Every server we start is stopped by its PID; nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import lasting_port, stop_process, wait_until
from tests.support.s3 import S3Endpoint

MODULE = "github.com/seaweedfs/seaweedfs"
VERSION = "v0.0.0-20261109003541-7506e5f91cd6"  # weed 4.53
CACHE = Path(
    os.environ.get("INFERMODES_SEAWEEDFS_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infermodes/seaweedfs"
)
BINARY = CACHE / VERSION / "weed"
START_TIMEOUT = 60.0


def _go() -> str:
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if found is None:
        raise RuntimeError("building SeaweedFS needs Go (the machine's go, or /usr/local/go)")
    return found


def ensure_installed() -> Path:
    """The ``weed`` binary, built from the pinned module when it is not cached yet."""
    if BINARY.exists():
        return BINARY
    go = _go()
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-p=2 -buildvcs=false"}
    listing = subprocess.run(
        [go, "mod", "download", "-json", f"{MODULE}@{VERSION}"],
        check=True,
        capture_output=True,
        env=env,
        cwd=tempfile.gettempdir(),
    )
    source = Path(json.loads(listing.stdout)["Dir"])
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
    try:
        shutil.copytree(source, work / "src")
        for path in (work / "src").rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)
        subprocess.run(
            [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(work / "weed"), "./weed"],
            check=True,
            capture_output=True,
            env=env,
            cwd=work / "src",
        )
        BINARY.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work / "weed", BINARY)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BINARY


def _s3_ready(endpoint: S3Endpoint) -> bool:
    """Ready when an object can be written: the volume server has registered too."""
    client = endpoint.client()
    try:
        client.create_bucket(Bucket="infermodes-probe")
        client.put_object(Bucket="infermodes-probe", Key="probe", Body=b"ok")
    except Exception:
        return False
    return True


@contextlib.contextmanager
def seaweedfs_server() -> Iterator[S3Endpoint]:
    """One ``weed server`` (master, volume, filer, S3 gateway) with credentials
    ``testing``/``testing``, as ``S3Endpoint.env`` gives them."""
    binary = ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="infermodes-seaweedfs-"))
    (root / "data").mkdir()
    identity = {"accessKey": "testing", "secretKey": "testing"}
    config = {
        "identities": [
            {
                "name": "testing",
                "credentials": [identity],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (root / "s3.json").write_text(json.dumps(config))
    # eight ports at once: each free_port() is free when asked, but the kernel may give one
    # twice in a row (a CI run's filer found its port taken by the master's gRPC server)
    s3_port = lasting_port()
    ports = {name: lasting_port() for name in ("master", "volume", "filer")}
    grpc = {name: lasting_port() for name in ("master", "volume", "filer", "s3")}
    command = [
        str(binary), "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
        "-volume.max=0", "-volume.preStopSeconds=0", "-master.volumeSizeLimitMB=256",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
        "-s3", f"-s3.port={s3_port}", f"-s3.port.grpc={grpc['s3']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={root / 's3.json'}",
    ]  # fmt: skip
    endpoint = S3Endpoint(f"http://127.0.0.1:{s3_port}")
    log_path = root / "weed.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(
            lambda: proc.poll() is not None or _s3_ready(endpoint), START_TIMEOUT, "SeaweedFS"
        )
        if proc.poll() is not None:
            raise RuntimeError(
                f"weed exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}"
            )
        yield endpoint
    finally:
        stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)
