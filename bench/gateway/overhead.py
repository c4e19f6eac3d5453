"""Gateway overhead: req/s and p50 at 1 and 16 connections straight to one model-server
replica, through nginx (Debian's, as a keep-alive reverse proxy) and through
``infermodes gateway``, all in front of the same replica in the same run.

Targets (issue 11): gateway throughput at 16 connections >= 0.8x nginx's; p50 overhead over
going straight to the replica <= 0.3 ms. The machine is noisy, so the three are measured in
rounds with a rotating order and the medians compared. Driven by bench/serve's wrk script and
accounting (one loader thread, non-2xx counted, cores per process group).

    .venv/bin/python bench/gateway/overhead.py [--rounds 3] [--seconds 10] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import xgboost as xgb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "serve"))

import run as serve_bench  # noqa: E402

NGINX_CONF = """worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fastcgi;
  uwsgi_temp_path {work}/nginx-uwsgi;
  scgi_temp_path {work}/nginx-scgi;
  upstream replica {{ server 127.0.0.1:{replica}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 6m;
    location = /ready {{ return 200; }}
    location = /endpoints/bench/invocations {{
      proxy_pass http://replica/invocations;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
PATH = "/endpoints/bench/invocations"


def ensure_nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        subprocess.run(["apt-get", "install", "-y", "nginx-light"], check=True)
        found = "/usr/sbin/nginx"
    return found


def targets(work: Path, tarball: Path, row: str, workers: int) -> list[serve_bench.Server]:
    """The replica, then nginx and the gateway in front of it."""
    replica_port, nginx_port, gateway_port = (serve_bench.free_port() for _ in range(3))
    infermodes = str(serve_bench.PY.parent / "infermodes")
    replica = serve_bench.csv_server(
        "direct",
        [infermodes, "serve", "--model", f"file://{tarball}", "--host", "127.0.0.1",
         "--port", str(replica_port), "--workers", str(workers)],
        replica_port, row,
    )  # fmt: skip
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, replica=replica_port, port=nginx_port))
    nginx = serve_bench.csv_server("nginx", [ensure_nginx(), "-c", str(conf)], nginx_port, row)
    nginx.ready_path, nginx.invoke_path, nginx.profile_python = "/ready", PATH, False
    endpoints = work / "endpoints.json"
    spec = {"mode": "realtime", "model": {"uri": "file:///unused"}, "realtime": {}}
    endpoints.write_text(json.dumps({"endpoints": [
        {"name": "bench", "spec": spec, "replicas": [f"127.0.0.1:{replica_port}"]}]}))  # fmt: skip
    gateway = serve_bench.csv_server(
        "gateway",
        [infermodes, "gateway", "--static-endpoints", str(endpoints), "--port", str(gateway_port),
         "--log-level", "warning"],
        gateway_port, row,
    )  # fmt: skip
    gateway.ready_path, gateway.invoke_path = "/readyz", PATH
    return [replica, nginx, gateway]


@contextlib.contextmanager
def all_running(servers: list[serve_bench.Server], work: Path, expected: float) -> Iterator[list]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(serve_bench.running(s, work / f"{s.name}.log", expected))[0]
               for s in servers]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="model server workers")
    parser.add_argument("--tarball", type=Path, help="model.tar.gz (default: train the example)")
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway at 16 conns")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    serve_bench.ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    tarball, model_json = serve_bench.prepare_model(work, args.tarball)
    values = serve_bench.first_row()
    booster = xgb.Booster(model_file=str(model_json))
    expected = float(booster.inplace_predict(np.asarray([values]))[0])
    row = ",".join(repr(v) for v in values)
    servers = targets(work, tarball, row, args.workers)
    results: dict[tuple[str, int], list[serve_bench.LoadResult]] = {}
    profile = None
    with all_running(servers, work, expected) as procs:
        for round_ in range(args.rounds):
            for connections in (1, 16):
                order = servers[round_ % 3 :] + servers[: round_ % 3]
                for server in order:
                    proc = procs[servers.index(server)]
                    result = serve_bench.wrk(server, proc.pid, connections, args.seconds)
                    results.setdefault((server.name, connections), []).append(result)
                    print(f"round {round_ + 1} {server.name:<8} c={connections:<3} "
                          f"{result.rps:>8.0f} req/s  p50 {result.p50_ms:.3f} ms  "
                          f"non2xx {result.non2xx}", flush=True)  # fmt: skip
        if args.profile:
            spy = Path.home() / ".cache/infermodes/bench-mlserver-venv/bin/py-spy"
            py_spy = Path(shutil.which("py-spy") or spy)
            raw = work / "gateway-profile"
            profile = serve_bench.profile(servers[2], procs[2], py_spy, raw, args.seconds)
    print(summary(results))
    if profile:
        print("\ngateway profile at 16 connections (share of samples):\n" + profile)
    if args.json:
        figures = {f"{name}/{c}": [asdict(r) for r in runs] for (name, c), runs in results.items()}
        args.json.write_text(json.dumps({"figures": figures, "profile": profile}, indent=2))


def summary(results: dict[tuple[str, int], list[serve_bench.LoadResult]]) -> str:
    def median(name: str, connections: int, field: str) -> float:
        return statistics.median(getattr(r, field) for r in results[(name, connections)])

    rounds = len(results[("direct", 1)])
    lines = [
        f"{'target':<8} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'cores':>6} "
        f"{'others':>6}   (medians of {rounds} rounds; cores: the replica for direct, else the "
        "proxy; others: cores busy with other people's work during the run)"
    ]
    for connections in (1, 16):
        for name in ("direct", "nginx", "gateway"):
            lines.append(
                f"{name:<8} {connections:>5} {median(name, connections, 'rps'):>8.0f} "
                f"{median(name, connections, 'p50_ms'):>8.3f} "
                f"{median(name, connections, 'p99_ms'):>8.2f} "
                f"{median(name, connections, 'cores_server'):>6.2f} "
                f"{median(name, connections, 'cores_others'):>6.2f}"
            )
    ratio = median("gateway", 16, "rps") / median("nginx", 16, "rps")
    lines.append(f"gateway / nginx req/s at 16 connections: {ratio:.2f} (target >= 0.8)")
    for connections in (1, 16):
        for name in ("nginx", "gateway"):
            extra = median(name, connections, "p50_ms") - median("direct", connections, "p50_ms")
            target = " (target <= 0.3)" if name == "gateway" else ""
            lines.append(
                f"p50 overhead of {name} over direct at {connections} connections: "
                f"{extra:.3f} ms{target}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
