"""The hostile-input run of issue 9: at least 10,000 generated requests against a live
``infermodes serve`` (two workers, default settings) on loopback, with maximal bodies and slow
clients beside them, then the figures: answers by status, 5xx, tracebacks in the log, worker
restarts, each worker's peak RSS, and how long /ping took while the large requests ran.

Every request comes from the strategies the property tests use (``tests/support/hostile.py``)
and is checked as they check it: a prediction or a 4xx in the error shape, and the request
pipelined behind it still answered. A contract violation stops the run with the (shrunk)
request that caused it. Run it with the project's interpreter:

    .venv/bin/python bench/hostile/run.py              # about 2-4 minutes on 2 busy cores
    .venv/bin/python bench/hostile/run.py --requests 500 --seed 7
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from hypothesis import Phase, given, seed, settings

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.abalone import train_abalone  # noqa: E402
from tests.support.hostile import Connection, Request, probe, requests  # noqa: E402
from tests.support.processes import running_server  # noqa: E402

ROW = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15\n"
LARGE = [  # the largest bodies the defaults let through, and the ones they refuse
    (b"text/csv", ROW * 120_000),  # 5.6 MiB, 120,000 rows
    (b"text/libsvm", b"0\n" * (3 * 1024 * 1024)),  # the observed 3.1 M-row body: 413
    (
        b"application/json",
        b"[" + b"[1,0,0,0.4,0.3,0.09,0.5,0.2,0.1,0.1]," * 140_000 + b"[1,0,0,0,0,0,0,0,0,0]]",
    ),
    (b"application/json", b"[" + b"[]," * 2_000_000 + b"[]]"),  # 2 M rows: 413 after parsing
]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


class Background:
    """Threads beside the generated requests, until ``stop``: maximal bodies (their statuses
    counted), slow clients (each must get a 408), and /ping latency samples."""

    def __init__(self, url: str, port: int) -> None:
        self.url, self.port = url, port
        self.stop = threading.Event()
        self.large: collections.Counter[int] = collections.Counter()
        self.slow: collections.Counter[int] = collections.Counter()
        self.ping_ms: list[float] = []
        self.ping_failures = 0
        self.threads = [
            threading.Thread(target=t) for t in (self.bodies, self.slowloris, self.ping)
        ]

    def bodies(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not self.stop.is_set():
                for content_type, body in LARGE:
                    headers = {"content-type": content_type.decode(), "accept": "application/json"}
                    self.large[
                        client.post("/invocations", content=body, headers=headers).status_code
                    ] += 1

    def slowloris(self) -> None:
        while not self.stop.is_set():
            with Connection(self.port) as connection:
                connection.send(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Len")
                response = connection.response()
                self.slow[response.status if response else 0] += 1

    def ping(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.wait(0.05):
                started = time.perf_counter()
                if client.get("/ping").status_code == 200:
                    self.ping_ms.append((time.perf_counter() - started) * 1000)
                else:
                    self.ping_failures += 1

    def __enter__(self) -> Background:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="infermodes-hostile-"))
    model = work / "model"
    train_abalone(model)
    serve = ["--model", f"file://{model / 'model.tar.gz'}", "--workers", str(args.workers)]
    statuses: collections.Counter[int] = collections.Counter()
    started = time.monotonic()
    with running_server(serve, work / "server.log") as server:
        port = int(server.url.rsplit(":", 1)[1])
        workers = [child.pid for child in psutil.Process(server.proc.pid).children()]

        @seed(args.seed)
        @settings(
            max_examples=args.requests,
            database=None,
            deadline=None,
            phases=[Phase.generate, Phase.shrink],
        )
        @given(request=requests())
        def send(request: Request) -> None:
            statuses[probe(port, request).status] += 1

        with Background(server.url, port) as background:
            send()
        after = [child.pid for child in psutil.Process(server.proc.pid).children()]
        rss = {pid: round(peak_rss_mb(pid), 1) for pid in after}
        supervisor_rss = round(peak_rss_mb(server.proc.pid), 1)
    log = server.log
    ping = sorted(background.ping_ms)
    figures = {
        "generated_requests": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "large_requests": dict(sorted(background.large.items())),
        "slow_clients": dict(sorted(background.slow.items())),
        "all_requests": sum(statuses.values())
        + sum(background.large.values())
        + sum(background.slow.values())
        + len(ping)
        + background.ping_failures,
        "5xx": sum(n for s, n in statuses.items() if s >= 500)
        + sum(n for s, n in background.large.items() if s >= 500),
        "tracebacks_in_log": log.count("Traceback"),
        "worker_restarts": log.count("restarting") + len(set(workers) ^ set(after)),
        "worker_peak_rss_mb": rss,
        "supervisor_peak_rss_mb": supervisor_rss,
        "ping_ms_while_running": {
            "samples": len(ping),
            "not_200": background.ping_failures,
            "p50": round(statistics.median(ping), 2),
            "p99": round(ping[int(len(ping) * 0.99)], 2),
            "max": round(ping[-1], 2),
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    print(f"server log: {work / 'server.log'}")


if __name__ == "__main__":
    main()
