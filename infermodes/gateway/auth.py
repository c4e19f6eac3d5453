"""Signed requests only: with access keys configured, every request the gateway routes (the
platform's control plane, invocations, async invocations) must carry a valid AWS Signature V4
(``platform/sigv4.py``) before anything else looks at it. Health, readiness and metrics stay
unsigned: probes and scrapers carry no keys, and those routes hold no data.

The signature covers the body, so the whole body is read (bounded) and hashed first; the route
then reads the same bytes from a replay, and still sees the client's disconnect after it."""

from __future__ import annotations

import hashlib
import logging

from infermodes.errors import InfermodesError, PayloadTooLarge
from infermodes.gateway.errors import ValidationError
from infermodes.http import Message, Receive, Scope, Send, read_body
from infermodes.platform.sigv4 import AuthError, Verifier, error_response

log = logging.getLogger("infermodes.gateway")

UNSIGNED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
OPEN_WARNING = (
    "NO ACCESS KEYS: this gateway is OPEN. Anyone who can reach it may create, change and "
    "delete models and endpoints and invoke them. Give it access keys (INFERMODES_GATEWAY_"
    "ACCESS_KEYS; in the chart, gateway.auth.secretRef)."
)
OPEN_STATUS = b"ok; OPEN: no access keys, requests are not authenticated"


def replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the route: the body already read, then the client's own messages."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def verified(
    verifier: Verifier, limit: int, scope: Scope, receive: Receive, send: Send
) -> Receive | None:
    """The ``receive`` to route the request with, or None when it was refused (and answered).
    The headers are checked before the body is read; the body is at most ``limit`` bytes."""
    if scope["path"] in UNSIGNED_PATHS:
        return receive
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    raw_path = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = bytes(scope.get("query_string") or b"").decode("latin-1")
    try:
        pending = verifier.begin(scope["method"], raw_path, query, headers)
        try:
            body = await read_body(scope, receive, limit)
        except PayloadTooLarge as exc:
            raise ValidationError(str(exc), 413) from None
        key_id = pending.finish(hashlib.sha256(body).hexdigest())
    except InfermodesError as exc:
        if isinstance(exc, AuthError):
            log.info("refused %s %s: %s", scope["method"], scope["path"][:200], type(exc).__name__)
        status, response_headers, response_body = error_response(exc)
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": response_body})
        return None
    scope["infermodes.access_key"] = key_id
    return replay(body, receive)
