"""The HTTP floor: a constant-answer ASGI app, no framework, no model.

What uvicorn, uvloop and httptools cost per request and nothing else: it reads the body (as
any server must) and answers the same bytes every time, the prediction the bench expects for
its row (``BENCH_ANSWER``). Whatever ``infermodes serve`` costs above this under the same
settings and the same wrk script is ours (decode, predict, encode, metrics, dispatch). Run it
with ``uvicorn --factory --app-dir bench/serve floor_app:create_app`` (``run.py`` passes the
same uvicorn settings infermodes uses).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def create_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    answer = f"{os.environ['BENCH_ANSWER']}\n".encode()
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/csv"), (b"content-length", b"%d" % len(answer))],
    }
    body = {"type": "http.response.body", "body": answer}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:  # the whole body, as a real server reads it
            more = (await receive()).get("more_body", False)
        await send(start)
        await send(body)

    return app
