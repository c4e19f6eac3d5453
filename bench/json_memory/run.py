"""Memory and speed of decoding JSON bodies: the native numeric path (``fastjson``) against
``json.loads``' path (the decoder before it, still the fallback), side by side in one run.

Memory: for each body shape (6 MiB, the default payload limit), a fresh process decodes it
once per path and reports, per byte of body, the peak of tracemalloc's traced memory during
``codecs.decode`` and the rise of the process's peak RSS (VmHWM, reset before each decode
through ``/proc/self/clear_refs``) over its RSS before the decode. Speed: two ``infermodes
serve`` (one worker each, Abalone model) on loopback, one with the native path switched off
(a ``sitecustomize`` in the bench's temporary directory), requests interleaved between them,
one connection: latency and requests per second of a 6 MiB and a one-row JSON request, and
each server's worker peak RSS after the run.

    .venv/bin/python bench/json_memory/run.py [--json out.json] [--large 20] [--small 2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.abalone import train_abalone  # noqa: E402
from tests.support.processes import running_server  # noqa: E402

LIMIT = 6 * 1024 * 1024  # the model server's default --max-payload-bytes
ABALONE_ROW = [1, 0, 0, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]
OFF = "import infermodes.predict.fastjson as f\nf.shape = lambda body: None\n"


def fill(row: str, head: str = "[", tail: str = "]") -> bytes:
    """``head`` + ``row`` repeated, comma-separated, + ``tail``: as many rows as fit in LIMIT."""
    count = (LIMIT - len(head) - len(tail)) // (len(row) + 1)
    return (head + ",".join([row] * count) + tail).encode()


SHAPES = {
    "rows of one one-digit feature [[0],...]": lambda: fill("[0]"),
    "rows of 20 one-digit features": lambda: fill(json.dumps([7] * 20)),
    "rows of 20 six-digit decimals": lambda: fill(json.dumps([0.123456] * 20)),
    "Abalone rows under instances": lambda: fill(json.dumps(ABALONE_ROW), '{"instances": [', "]}"),
    "Abalone rows as features objects": lambda: fill(json.dumps({"features": ABALONE_ROW})),
    "one row of 6 MiB of one-digit values": lambda: fill("1", "[", "]"),
}

CHILD = """
import ctypes, gc, json, sys, tracemalloc
sys.path.insert(0, {repo!r})
from bench.json_memory.run import SHAPES
from infermodes.predict import codecs, fastjson
if {off}:
    fastjson.shape = lambda body: None
body = SHAPES[{shape!r}]()

def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name):
            return int(line.split()[1]) * 1024

def decode():
    return codecs.decode(body, codecs.JSON, None, max_rows=None, max_values=1 << 40)

gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # the body's temporaries: returned, not reused
before = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
matrix = decode()
rss = status("VmHWM:") - before
shape = matrix.shape
del matrix
gc.collect()
tracemalloc.start()
decode()
traced = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({{"bytes": len(body), "rows": shape[0], "width": shape[1],
                  "traced": traced, "rss": rss}}))
"""


def memory(shape: str, off: bool) -> dict[str, float]:
    code = CHILD.format(repo=str(REPO), off=off, shape=shape)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def post(connection: http.client.HTTPConnection, body: bytes) -> float:
    started = time.perf_counter()
    connection.request(
        "POST", "/invocations", body, {"Content-Type": "application/json", "Accept": "text/csv"}
    )
    response = connection.getresponse()
    answer = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {answer[:200]!r}")
    return elapsed


def worker_peak(pid: int) -> int:
    """The largest VmHWM among the server's processes (its workers, or itself with one)."""
    peaks = []
    server = psutil.Process(pid)
    for process in [server, *server.children(recursive=True)]:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) * 1024)
    return max(peaks)


def speed(work: Path, large: int, small: int) -> dict[str, dict[str, float]]:
    model = train_abalone(work / "model") / "model.tar.gz"
    (work / "off").mkdir()
    (work / "off/sitecustomize.py").write_text(OFF)
    path = os.environ.get("PYTHONPATH", str(REPO))
    bodies = {
        "6 MiB": fill(json.dumps(ABALONE_ROW), '{"instances": [', "]}"),
        "1 row": json.dumps({"instances": [ABALONE_ROW]}).encode(),
    }
    runs = {"json.loads": f"{work / 'off'}:{path}", "native": path}
    args = ["--model", str(model), "--workers", "1"]
    results: dict[str, dict[str, float]] = {}
    with (
        running_server(args, work / "off.log", {"PYTHONPATH": runs["json.loads"]}) as old,
        running_server(args, work / "on.log", {"PYTHONPATH": runs["native"]}) as new,
    ):
        servers = {"json.loads": old, "native": new}
        connections = {
            name: http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            for name, server in servers.items()
        }
        for name in servers:  # warm up
            post(connections[name], bodies["1 row"])
        for kind, count in (("6 MiB", large), ("1 row", small)):
            times: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(count):
                for name in servers:
                    times[name].append(post(connections[name], bodies[kind]))
            for name in servers:
                samples = sorted(times[name])
                results[f"{kind} {name}"] = {
                    "requests": count,
                    "req_per_s": count / sum(samples),
                    "p50_ms": statistics.median(samples) * 1e3,
                    "p99_ms": samples[int(0.99 * (len(samples) - 1))] * 1e3,
                }
        for name, server in servers.items():
            results[f"worker peak RSS {name}"] = {"bytes": worker_peak(server.proc.pid)}
            connections[name].close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--large", type=int, default=20, help="6 MiB requests per server")
    parser.add_argument("--small", type=int, default=2000, help="one-row requests per server")
    options = parser.parse_args()
    figures: dict[str, object] = {}
    print(f"{'shape (6 MiB body)':<40} {'path':<11} {'traced/byte':>11} {'RSS/byte':>9}")
    for shape in SHAPES:
        for name, off in (("json.loads", True), ("native", False)):
            result = memory(shape, off)
            figures[f"{shape} {name}"] = result
            print(
                f"{shape:<40} {name:<11} {result['traced'] / result['bytes']:>11.2f} "
                f"{result['rss'] / result['bytes']:>9.2f}"
            )
    with tempfile.TemporaryDirectory(prefix="json-bench-") as tmp:
        timed = speed(Path(tmp), options.large, options.small)
    for name, result in timed.items():
        print(f"{name:<28} " + ", ".join(f"{key} {value:.1f}" for key, value in result.items()))
    figures.update(timed)
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
