"""Benchmark the infermodes model server against MLServer and against the physical floors.

One run measures everything that is compared, because this machine is noisy (up to 50% between
passes): throughput and latency under wrk at 1 and 16 connections, cold start, and the floors
(one-row ``inplace_predict`` in process, ``import xgboost`` + model load, a bare FastAPI route).
Run it with the project's interpreter: ``.venv/bin/python bench/serve/run.py``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import peer_env  # noqa: E402
import profile_summary  # noqa: E402
import xgboost as xgb  # noqa: E402

from tests.support.processes import BUSY_STATES, machine_cpu_seconds  # noqa: E402

DATA = REPO / "examples" / "abalone" / "abalone.csv"
PY = Path(sys.executable)
MODEL_NAME = "abalone"
READY_DEADLINE_S = 120.0
POLL_INTERVAL_S = 0.005


@dataclass
class Server:
    """How to start one server and how to talk to it."""

    name: str
    argv: list[str]
    port: int
    ready_path: str
    invoke_path: str
    body: str
    content_type: str
    parse: Callable[[bytes], float]
    env: dict[str, str] = field(default_factory=dict)
    profile_python: bool = False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@dataclass
class LoadResult:
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    socket_errors: int
    # Cores busy on average during the run: the server (all its processes), wrk, and everything
    # else on the machine. "others" is the noise: other people's work on a shared machine.
    cores_server: float
    cores_wrk: float
    cores_others: float

    @property
    def per_cpu_s(self) -> float:
        """Requests per CPU-second the server used: what one core buys, which other people's
        load on the machine disturbs far less than req/s."""
        return self.rps / self.cores_server if self.cores_server else 0.0


@dataclass
class MixedResult:
    """One-row latency under 16 connections, with every ``big_every``-th request of each
    connection carrying ``big_rows`` rows (0: none), timed per request in ``mixed.lua``."""

    connections: int
    big_every: int
    big_rows: int
    rps: float
    small_requests: int
    small_p50_ms: float
    small_p99_ms: float
    big_requests: int
    big_p50_ms: float
    big_p99_ms: float
    non2xx: int


@dataclass
class ServerResult:
    name: str
    cold_start_s: list[float] = field(default_factory=list)
    load: list[LoadResult] = field(default_factory=list)
    mixed: list[MixedResult] = field(default_factory=list)
    profile: str | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def abalone_rows(count: int) -> list[list[float]]:
    """The first ``count`` Abalone rows, encoded as the example model expects: sex one-hot
    (M, F, I)."""
    out = []
    with DATA.open() as f:
        for row, _ in zip(csv.DictReader(f), range(count), strict=False):
            sex = [float(row["sex"] == s) for s in "MFI"]
            out.append(sex + [float(v) for k, v in row.items() if k not in ("sex", "rings")])
    return out


def prepare_model(work: Path, tarball: Path | None) -> tuple[Path, Path]:
    """Return the model.tar.gz and the booster as a JSON file that every peer can load."""
    if tarball is None:
        subprocess.run(
            [
                str(PY),
                str(REPO / "examples" / "abalone" / "train.py"),
                "--output",
                str(work / "model"),
            ],
            check=True,
            cwd=REPO,
        )
        tarball = work / "model" / "model.tar.gz"
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("xgboost-model")
        if member is None:
            raise SystemExit(f"{tarball} has no regular member 'xgboost-model'")
        booster = xgb.Booster()
        booster.load_model(bytearray(member.read()))
    model_json = work / MODEL_NAME / "model.json"
    model_json.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(model_json)
    return tarball, model_json


def inplace_floor(model_json: Path, row: list[float], calls: int) -> dict[str, float]:
    """Median wall time of ``inplace_predict`` with one thread, for 1 and for 100 rows."""
    booster = xgb.Booster(model_file=str(model_json))
    booster.set_param({"nthread": 1})
    out: dict[str, float] = {}
    for rows in (1, 100):
        x = np.repeat(np.asarray([row], dtype=np.float32), rows, axis=0)
        for _ in range(200):
            booster.inplace_predict(x)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            booster.inplace_predict(x)
            times.append(time.perf_counter_ns() - t0)
        out[f"inplace_predict_{rows}_rows_ms"] = statistics.median(times) / 1e6
    return out


def import_load_floor(python: Path, model_json: Path, repeats: int) -> list[float]:
    """Wall time of a fresh interpreter that imports xgboost and loads the model.

    Measured in both environments: ``import xgboost`` also imports scikit-learn when it is
    installed, as it is in MLServer's.
    """
    code = f"import xgboost; xgboost.Booster(model_file={str(model_json)!r})"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([str(python), "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return times


def http(url: str, body: bytes | None = None, content_type: str = "") -> tuple[int, bytes]:
    headers = {"Content-Type": content_type} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@contextlib.contextmanager
def running(server: Server, log: Path, expected: float) -> Iterator[tuple[subprocess.Popen, float]]:
    """Start the server, wait for a correct answer, yield (process, cold start s), then stop it.

    Cold start is process start to the first correct invocation: ready probe polled every 5 ms,
    then the real request, bounded by READY_DEADLINE_S.
    """
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            server.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
            env={**os.environ, **server.env},
            start_new_session=True,
        )
        try:
            cold = wait_correct(server, proc, t0, expected, log)
            yield proc, cold
        finally:
            stop(proc)


def wait_correct(
    server: Server, proc: subprocess.Popen, t0: float, expected: float, log: Path
) -> float:
    deadline = t0 + READY_DEADLINE_S
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{server.name} exited with {proc.returncode}; see {log}")
        with contextlib.suppress(OSError):
            if http(server.url(server.ready_path))[0] == 200:
                status, answer = http(
                    server.url(server.invoke_path), server.body.encode(), server.content_type
                )
                if status == 200:
                    elapsed = time.perf_counter() - t0
                    got = server.parse(answer)
                    if not np.isclose(got, expected, rtol=1e-5, atol=1e-5):
                        raise SystemExit(f"{server.name} answered {got}, expected {expected}")
                    return elapsed
        time.sleep(POLL_INTERVAL_S)
    raise SystemExit(f"{server.name} gave no correct answer within {READY_DEADLINE_S} s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and the workers it forked (its own session), by its process group id."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
        os.killpg(proc.pid, signal.SIGKILL)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot, summed over cores."""
    machine = machine_cpu_seconds()
    return sum(machine[state] for state in BUSY_STATES)


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the live processes of one process group (server, workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(server: Server, pgid: int, connections: int, duration_s: int) -> LoadResult:
    """Drive the server with wrk (one loader thread, same for every server) and post.lua.

    Also accounts for where the cores went during the run, so a noisy run can be recognised.
    """
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(HERE / "post.lua"),
        server.url(server.invoke_path),
    ]
    env = {**os.environ, "BENCH_BODY": server.body, "BENCH_CONTENT_TYPE": server.content_type}
    before = (time.perf_counter(), machine_busy_s(), group_cpu_s(pgid), children_cpu_s())
    out = subprocess.run(
        cmd, env=env, check=True, capture_output=True, text=True, timeout=duration_s + 60
    ).stdout
    after = (time.perf_counter(), machine_busy_s(), group_cpu_s(pgid), children_cpu_s())
    wall, busy, in_server, in_wrk = (a - b for a, b in zip(after, before, strict=True))
    line = next(line for line in out.splitlines() if line.startswith("BENCH_RESULT "))
    r = json.loads(line.removeprefix("BENCH_RESULT "))
    good = r["requests"] - r["non2xx"]
    return LoadResult(
        connections=connections,
        rps=good / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1e3,
        p99_ms=r["p99_us"] / 1e3,
        requests=r["requests"],
        non2xx=r["non2xx"],
        socket_errors=r["socket_errors"],
        cores_server=in_server / wall,
        cores_wrk=in_wrk / wall,
        cores_others=max(0.0, busy - in_server - in_wrk) / wall,
    )


def mixed(
    server: Server, connections: int, big_body: str, big_rows: int, every: int, duration_s: int
) -> MixedResult:
    """wrk with one thread per connection and ``mixed.lua``: one-row requests, and every
    ``every``-th request of a connection carrying ``big_body`` (0: none)."""
    cmd = [
        "wrk",
        f"-t{connections}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "5s",
        "-s",
        str(HERE / "mixed.lua"),
        server.url(server.invoke_path),
    ]
    env = {
        **os.environ,
        "BENCH_BODY": server.body,
        "BENCH_BIG_BODY": big_body,
        "BENCH_BIG_EVERY": str(every),
        "BENCH_CONTENT_TYPE": server.content_type,
    }
    out = subprocess.run(
        cmd, env=env, check=True, capture_output=True, text=True, timeout=duration_s + 60
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH_MIXED "))
    r = json.loads(line.removeprefix("BENCH_MIXED "))
    return MixedResult(
        connections=connections,
        big_every=every,
        big_rows=big_rows if every else 0,
        rps=(r["requests"] - r["non2xx"]) / (r["duration_us"] / 1e6),
        small_requests=r["small"],
        small_p50_ms=r["small_p50_us"] / 1e3,
        small_p99_ms=r["small_p99_us"] / 1e3,
        big_requests=r["big"],
        big_p50_ms=r["big_p50_us"] / 1e3,
        big_p99_ms=r["big_p99_us"] / 1e3,
        non2xx=r["non2xx"] + r["socket_errors"],
    )


def profile(
    server: Server, proc: subprocess.Popen, py_spy: Path, out: Path, duration_s: int
) -> str:
    """Sample the server (and its workers) with py-spy under 16 connections; summarise."""
    raw = out.with_suffix(".txt")
    spy = subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(proc.pid),
            "--subprocesses",
            "--rate",
            "250",
            "--duration",
            str(duration_s),
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wrk(server, proc.pid, 16, duration_s)
    finally:
        spy.wait(timeout=duration_s + 60)
    return profile_summary.summarise(raw)


def csv_server(
    name: str, argv: list[str], port: int, row: str, env: dict[str, str] | None = None
) -> Server:
    return Server(
        name=name,
        argv=argv,
        port=port,
        ready_path="/ping",
        invoke_path="/invocations",
        body=row,
        content_type="text/csv",
        parse=lambda b: float(b.decode().split(",")[0]),
        env=env or {},
        profile_python=True,
    )


def mlserver(
    name: str,
    python: Path,
    work: Path,
    model_json: Path,
    row: list[float],
    extra: dict[str, object],
    env: dict[str, str] | None = None,
) -> Server:
    """MLServer's XGBoost runtime over the same model, in its own repository folder."""
    port = free_port()
    root = work / name
    (root / MODEL_NAME).mkdir(parents=True, exist_ok=True)
    shutil.copy(model_json, root / MODEL_NAME / "model.json")
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        **extra,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    (root / MODEL_NAME / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL_NAME,
                "implementation": "mlserver_xgboost.XGBoostModel",
                "parameters": {"uri": "./model.json"},
            },
            indent=2,
        )
    )
    body = json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
    )
    return Server(
        name=name,
        argv=[str(python.parent / "mlserver"), "start", str(root)],
        port=port,
        ready_path=f"/v2/models/{MODEL_NAME}/ready",
        invoke_path=f"/v2/models/{MODEL_NAME}/infer",
        body=body,
        content_type="application/json",
        parse=lambda b: float(json.loads(b)["outputs"][0]["data"][0]),
        env=env or {},
    )


# MLServer with its parallel inference pool disabled, and, as in the orientation figure,
# without access log (debug: false) and without metrics (metrics_endpoint: null).
MLSERVER_NO_POOL = {"parallel_workers": 0, "debug": False, "metrics_endpoint": None}


# The uvicorn settings ``infermodes serve`` runs with (``infermodes.http.uvicorn_options``),
# as command-line flags, for the HTTP floor.
SAME_UVICORN = [
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--ws",
    "none",
    "--lifespan",
    "off",
    "--no-access-log",
    "--no-server-header",
    "--no-date-header",
    "--no-proxy-headers",
    "--timeout-keep-alive",
    "75",
]


def uvicorn_app(app: str) -> list[str]:
    return [str(PY), "-m", "uvicorn", "--factory", "--app-dir", str(HERE), app]


def servers(
    work: Path,
    tarball: Path,
    model_json: Path,
    row: list[float],
    peer_python: Path,
    expected: float,
) -> list[Server]:
    csv_row = ",".join(repr(v) for v in row)
    infermodes = str(PY.parent / "infermodes")
    # name, command before its address and workers, environment
    ours_and_floors: list[tuple[str, list[str], dict[str, str] | None]] = [
        ("infermodes", [infermodes, "serve", "--model", f"file://{tarball}"], None),
        (
            "http-floor",
            [*uvicorn_app("floor_app:create_app"), *SAME_UVICORN],
            {"BENCH_ANSWER": repr(expected)},
        ),
        (
            "protocol-floor",
            [str(PY), str(HERE / "protocol_floor.py")],
            {"BENCH_ANSWER": repr(expected)},
        ),
        (
            "bare-fastapi",
            [*uvicorn_app("bare_app:create_app"), "--no-access-log"],
            {"BENCH_MODEL": str(model_json)},
        ),
    ]
    out = []
    for name, command, env in ours_and_floors:
        for workers in (1, 2):
            port = free_port()
            listen = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
            out.append(csv_server(f"{name}-{workers}w", [*command, *listen], port, csv_row, env))
    out.append(mlserver("mlserver-default", peer_python, work, model_json, row, {}))
    out.append(mlserver("mlserver-no-pool", peer_python, work, model_json, row, MLSERVER_NO_POOL))
    # Not a target, a diagnosis: how much of MLServer's gap is XGBoost's OpenMP threads
    # oversubscribing two cores (MLServer predicts with all cores) rather than its own overhead.
    out.append(
        mlserver(
            "mlserver-no-pool-omp1",
            peer_python,
            work,
            model_json,
            row,
            MLSERVER_NO_POOL,
            env={"OMP_NUM_THREADS": "1"},
        )
    )
    return out


def installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def source_revision() -> str:
    """The commit the measured infermodes came from, marked when its sources differ from it."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "infermodes", "pyproject.toml"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def versions(peer_python: Path) -> dict[str, str]:
    peer = subprocess.run(
        [
            str(peer_python),
            "-c",
            (
                "from importlib import metadata as m;"
                "print(m.version('mlserver'), m.version('xgboost-cpu'), m.version('uvloop'))"
            ),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return {
        "infermodes source": source_revision(),
        "cpu": f"{cpu} x {os.cpu_count()}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version.split("[")[0].strip(),
        **{
            p: installed(p)
            for p in (
                "infermodes",
                "xgboost-cpu",
                "fastapi",
                "uvicorn",
                "uvloop",
                "numpy",
                "scikit-learn",
            )
        },
        "mlserver": peer[0],
        "mlserver xgboost-cpu": peer[1],
        "mlserver uvloop": peer[2],
    }


def ensure_wrk() -> None:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)


def report(results: list[ServerResult], floors: dict[str, object]) -> str:
    lines = [
        f"{'server':<22} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'non2xx':>7} {'cold s':>6} {'req/cpu-s':>9}  cores: server wrk others"
    ]
    for res in results:
        cold = statistics.median(res.cold_start_s)
        for i, lr in enumerate(res.load):
            lines.append(
                f"{res.name if i == 0 else '':<22} {lr.connections:>5} {lr.rps:>8.0f} "
                f"{lr.p50_ms:>8.3f} {lr.p99_ms:>8.2f} "
                f"{lr.non2xx + lr.socket_errors:>7} "
                f"{f'{cold:.3f}' if i == 0 else '':>6} {lr.per_cpu_s:>9.0f}  "
                f"{lr.cores_server:>14.2f} {lr.cores_wrk:>3.2f} {lr.cores_others:>6.2f}"
            )
    lines.append("")
    for key, value in floors.items():
        lines.append(f"floor {key}: {value}")
    by = {r.name: r for r in results}
    lines.append("")
    for ours in (r for r in results if r.name.startswith("infermodes")):
        for peer in ("mlserver-default", "mlserver-no-pool", "mlserver-no-pool-omp1"):
            if peer in by:
                pairs = zip(ours.load, by[peer].load, strict=True)
                ratios = ", ".join(
                    f"{a.rps / b.rps:.2f}x at {a.connections}c "
                    f"({a.per_cpu_s / b.per_cpu_s:.2f}x per CPU-s)"
                    for a, b in pairs
                )
                lines.append(f"{ours.name} / {peer}: {ratios}")
    floors_named = (("http-floor", "the HTTP floor"), ("protocol-floor", "our protocol, constant"))
    for ours in (r for r in results if r.name.startswith("infermodes")):
        for prefix, what in floors_named:
            floor = by.get(ours.name.replace("infermodes", prefix))
            if floor is not None and floor.load:
                pairs = zip(ours.load, floor.load, strict=True)
                ratios = ", ".join(
                    f"{a.rps / b.rps:.2f}x at {a.connections}c (p50 {a.p50_ms / b.p50_ms:.2f}x)"
                    for a, b in pairs
                )
                lines.append(f"{ours.name} / {floor.name} ({what}): {ratios}")
    mixed_rows = [(r.name, m) for r in results for m in r.mixed]
    if mixed_rows:
        lines += ["", "mixed load (one thread and connection each in wrk, latency per request):"]
        lines.append(
            f"{'server':<22} {'conns':>5} {'big':>11} {'req/s':>8} {'1-row p50':>9} "
            f"{'1-row p99':>9} {'big p50':>8} {'big p99':>8} {'non2xx':>7}"
        )
        for name, m in mixed_rows:
            big = f"1/{m.big_every}x{m.big_rows}" if m.big_every else "none"
            lines.append(
                f"{name:<22} {m.connections:>5} {big:>11} {m.rps:>8.0f} {m.small_p50_ms:>9.3f} "
                f"{m.small_p99_ms:>9.3f} {m.big_p50_ms:>8.3f} {m.big_p99_ms:>8.3f} {m.non2xx:>7}"
            )
    lines.append("")
    lines.extend(targets(by))
    return "\n".join(lines)


def targets(by: dict[str, ServerResult]) -> list[str]:
    """The issue's targets, checked for each infermodes configuration measured."""

    def at(name: str, conns: int) -> LoadResult | None:
        return (
            next((lr for lr in by[name].load if lr.connections == conns), None)
            if name in by
            else None
        )

    out = []
    for name in (n for n in by if n.startswith("infermodes")):
        checks: list[tuple[str, float | None, float, bool]] = []
        ours16 = at(name, 16)
        for peer, bar in (("mlserver-default", 4.0), ("mlserver-no-pool", 2.5)):
            peer16 = at(peer, 16)
            if ours16 and peer16:
                checks.append((f"16c throughput / {peer}", ours16.rps / peer16.rps, bar, True))
        ours1 = at(name, 1)
        if ours1:
            checks.append(("p50 at 1c (ms)", ours1.p50_ms, 0.6, False))
        checks.append(("cold start (s)", statistics.median(by[name].cold_start_s), 0.8, False))
        floor = name.replace("infermodes", "http-floor")
        floor16, floor1 = at(floor, 16), at(floor, 1)
        if ours16 and floor16:
            checks.append(("16c throughput / HTTP floor", ours16.rps / floor16.rps, 0.6, True))
        if ours1 and floor1:
            checks.append(("p50 at 1c / HTTP floor's", ours1.p50_ms / floor1.p50_ms, 1.5, False))
        alone = next((m for m in by[name].mixed if not m.big_every), None)
        for with_big in (m for m in by[name].mixed if m.big_every):
            if alone is not None:
                checks.append(
                    (
                        f"1-row p99 with 1/{with_big.big_every} big / without",
                        with_big.small_p99_ms / alone.small_p99_ms,
                        3.0,
                        False,
                    )
                )
        for what, value, bar, higher in checks:
            ok = value is not None and (value >= bar if higher else value <= bar)
            out.append(
                f"target {name}: {what} = {value:.3f} "
                f"({'>=' if higher else '<='} {bar}) {'MET' if ok else 'MISSED'}"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--connections", default="1,16", help="comma-separated")
    parser.add_argument("--cold-starts", type=int, default=3, help="cold starts per server")
    parser.add_argument(
        "--model",
        type=Path,
        help="an existing model.tar.gz (default: train one with examples/abalone/train.py)",
    )
    parser.add_argument("--only", help="comma-separated server names to run (default: all)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after timing, sample each infermodes server with py-spy",
    )
    parser.add_argument(
        "--mixed-every",
        type=int,
        default=10,
        help="mixed-load row: every Nth request of a connection carries --mixed-rows rows "
        "(0: no mixed-load row)",
    )
    parser.add_argument("--mixed-rows", type=int, default=1000, help="rows of a big request")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--work-dir", type=Path, help="keep logs and models here")
    parser.add_argument("--peer-venv", type=Path, default=peer_env.DEFAULT_DIR)
    args = parser.parse_args()

    # The peer's environment takes minutes to build: start it first, join before any timing
    # (a pip install running beside a measurement would skew it).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        peer_future = pool.submit(peer_env.ensure, args.peer_venv)
        ensure_wrk()
        work = args.work_dir or Path(tempfile.mkdtemp(prefix="infermodes-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        tarball, model_json = prepare_model(work, args.model)
        peer_python = peer_future.result()

    row = abalone_rows(1)[0]
    booster = xgb.Booster(model_file=str(model_json))
    expected = float(booster.inplace_predict(np.asarray([row], dtype=np.float32))[0])
    floors: dict[str, object] = inplace_floor(model_json, row, calls=5000)
    import_load = {
        env: import_load_floor(python, model_json, args.cold_starts)
        for env, python in (("project", PY), ("mlserver", peer_python))
    }
    for env, times in import_load.items():
        floors[f"import_xgboost_and_load_s ({env} env)"] = round(statistics.median(times), 3)
    connections = [int(c) for c in args.connections.split(",")]
    only = set(args.only.split(",")) if args.only else None
    info = versions(peer_python)
    print(json.dumps(info, indent=2), flush=True)

    chosen = [
        s
        for s in servers(work, tarball, model_json, row, peer_python, expected)
        if not only or s.name in only
    ]
    by_name = {s.name: ServerResult(s.name) for s in chosen}
    # Every phase interleaves the servers, so that other load on this shared machine falls on
    # all of them alike rather than on whichever ran while it lasted.
    for i in range(args.cold_starts):
        for server in chosen:
            with running(server, work / f"{server.name}-cold-{i}.log", expected) as (_, cold):
                by_name[server.name].cold_start_s.append(cold)
                print(f"{server.name} cold start {cold:.3f} s", flush=True)
    with contextlib.ExitStack() as stack:
        procs = {}
        for server in chosen:
            procs[server.name], _ = stack.enter_context(
                running(server, work / f"{server.name}.log", expected)
            )
            wrk(server, procs[server.name].pid, 16, 2)  # warm-up, not recorded
        for conns in connections:
            for server in chosen:
                result = wrk(server, procs[server.name].pid, conns, args.duration)
                by_name[server.name].load.append(result)
                print(f"{server.name} {result}", flush=True)
        if args.mixed_every:
            big_body = "\n".join(",".join(map(repr, r)) for r in abalone_rows(args.mixed_rows))
            for every in (0, args.mixed_every):  # without the big requests, then with them
                for server in (s for s in chosen if s.name.startswith("infermodes")):
                    result_m = mixed(server, 16, big_body, args.mixed_rows, every, args.duration)
                    by_name[server.name].mixed.append(result_m)
                    print(f"{server.name} {result_m}", flush=True)
        if args.profile:
            for server in (s for s in chosen if s.profile_python):
                by_name[server.name].profile = profile(
                    server,
                    procs[server.name],
                    peer_python.parent / "py-spy",
                    work / f"{server.name}-profile",
                    args.duration,
                )
    results = list(by_name.values())

    print()
    print(report(results, floors))
    for res in results:
        if res.profile:
            print(f"\nprofile of {res.name} under 16 connections:\n{res.profile}")
    print(f"\nlogs and models in {work}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "versions": info,
                    "floors": floors,
                    "import_load_s": import_load,
                    "expected": expected,
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
