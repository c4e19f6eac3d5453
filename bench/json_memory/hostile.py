"""Peak memory of a model server worker sent one hostile JSON body that the native decoder does
not take (so ``json.loads`` parses it whole), without and with the memory cap on such bodies.

For each shape, a fresh ``infermodes serve`` (one worker: the process is the worker, Abalone
model, ``--max-payload-bytes`` raised to 24 MiB, as an operator raising the limit would) gets
the body once; the figure is the rise of its peak RSS (VmHWM) over its RSS once ready, and the
answer's status. "uncapped" runs with ``INFERMODES_SERVE_MEMORY_BYTES`` at 1 TiB (the cap is
then the payload limit: the server before the cap, whatever its cgroup), "capped" with 512 MiB.

    .venv/bin/python bench/json_memory/hostile.py [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.abalone import train_abalone  # noqa: E402
from tests.support.processes import running_server  # noqa: E402

PAYLOAD = 24 * 1024 * 1024
ROW = [1, 0, 0, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]
MEMORY = {"uncapped": str(1 << 40), "capped": str(512 * 1024 * 1024)}


def padded(head: str, item: str, tail: str) -> bytes:
    """``head`` + ``item`` repeated, comma-separated, + ``tail``: as many as fit in PAYLOAD."""
    count = (PAYLOAD - len(head) - len(tail)) // (len(item) + 1)
    return (head + ",".join([item] * count) + tail).encode()


def keyed(count: int) -> bytes:
    """An object of ``count`` distinct keys beside ``instances``."""
    return (
        '{"instances": [' + json.dumps(ROW) + '], "meta": {'
        + ",".join(f'"k{i}":0' for i in range(count)) + "}}"
    ).encode()  # fmt: skip


SHAPES = {
    "zeros under a key beside instances": lambda: padded(
        '{"instances": [' + json.dumps(ROW) + '], "padding": [', "0", "]}"
    ),
    "one row of zeros ending in a string": lambda: padded("[", "0", ', "x"]'),
    "an object of 1.5 M keys beside instances": lambda: keyed(1_500_000),
}


def rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for {pid}")


def send(port: int, body: bytes) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.read().decode(errors="replace")
    connection.close()
    return response.status, answer[:160]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    results: dict[str, dict[str, dict[str, object]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        model = train_abalone(work / "model") / "model.tar.gz"
        args = ["--model", f"file://{model}", "--workers", "1"]
        for name, make in SHAPES.items():
            body = make()
            for setting, memory in MEMORY.items():
                env = {
                    "INFERMODES_SERVE_MAX_PAYLOAD_BYTES": str(PAYLOAD),
                    "INFERMODES_SERVE_MEMORY_BYTES": memory,
                }
                with running_server(args, work / f"{setting}.log", env) as server:
                    before = rss(server.proc.pid, "VmRSS:")
                    status, answer = send(server.port, body)
                    rise = rss(server.proc.pid, "VmHWM:") - before
                results.setdefault(name, {})[setting] = {
                    "bytes": len(body),
                    "status": status,
                    "rss_rise": rise,
                    "per_byte": round(rise / len(body), 2),
                    "answer": answer,
                }
                print(f"{name} | {setting}: {status}, +{rise / 2**20:.0f} MiB "
                      f"({rise / len(body):.2f} per byte) {answer[:80]!r}", flush=True)  # fmt: skip
    if options.json:
        options.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
