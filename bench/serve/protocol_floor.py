"""The floor under the model server's task-less path: a constant answer from infermodes' own
HTTP protocol, no app, no model.

``infermodes serve`` answers a small ``POST /invocations`` from its protocol without an ASGI
task (``infermodes.http.GuardedHttpProtocol`` and ``WholeBodyRoute``), which the HTTP floor
(``floor_app.py``, an ASGI app) cannot skip. This is that path with nothing of ours behind it:
uvicorn with the options ``infermodes serve`` gives it and a route that answers every such
request with the same bytes (``BENCH_ANSWER``), so what ``infermodes serve`` costs above it is
decode, predict, encode and metrics alone. Anything else gets the ASGI app: 200 for ``/ping``
(the bench's readiness probe), 404 for the rest.

    python bench/serve/protocol_floor.py --host 127.0.0.1 --port P --workers N
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from infermodes.http import ASGIApp, Receive, Scope, Send, uvicorn_options

ANSWER = f"{os.environ.get('BENCH_ANSWER', '0.0')}\n".encode()


class ConstantRoute:
    path = "/invocations"

    def answer_now(self, scope: Scope, body: bytes) -> tuple[int, str, bytes]:
        return 200, "text/csv", ANSWER


OPTIONS = uvicorn_options("warning", route=ConstantRoute())
Protocol = OPTIONS.pop("http")


async def ping_only(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    status = 200 if scope["path"] == "/ping" else 404
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def create_app() -> ASGIApp:
    return ping_only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "protocol_floor:create_app",
        factory=True,
        http="protocol_floor:Protocol",
        host=args.host,
        port=args.port,
        workers=args.workers,
        app_dir=str(Path(__file__).resolve().parent),
        proxy_headers=False,
        **OPTIONS,
    )


if __name__ == "__main__":
    main()
