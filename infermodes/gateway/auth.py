"""Signed requests only: with access keys configured, every request the gateway routes (the
platform's control plane, invocations, async invocations) must carry a valid AWS Signature V4
(``platform/sigv4.py``) before anything else looks at it. Health, readiness and metrics stay
unsigned: probes and scrapers carry no keys, and those routes hold no data.

The signature covers the body, so the whole body is read (bounded) and hashed first; the route
then reads the same bytes from a replay, and still sees the client's disconnect after it.

A gateway that listens on loopback only (``infermodes up``'s, open by default) answers only
requests addressed to a loopback name and sent by no other web page: a page in the machine's
browser could otherwise reach it under a name of its own that resolves to 127.0.0.1 (DNS
rebinding) and use its API, or post to it across sites."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from infermodes.errors import InfermodesError, PayloadTooLarge, clipped
from infermodes.gateway.errors import ValidationError
from infermodes.http import Message, Receive, Scope, Send, read_body, request_id
from infermodes.logs import Throttled, printable
from infermodes.platform.sigv4 import AuthError, Verifier, error_response, parse_keys
from infermodes.settings import GatewaySettings

log = logging.getLogger("infermodes.gateway")

UNSIGNED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
OPEN_WARNING = (
    "NO ACCESS KEYS: this gateway is OPEN. Anyone who can reach it may invoke its endpoints{}. "
    "Give it access keys (INFERMODES_GATEWAY_ACCESS_KEYS; in the chart, gateway.auth.secretRef)."
)
OPEN_PLATFORM = " and, through its platform API, create, change and delete models and endpoints"
OPEN_STATUS = b"ok; OPEN: no access keys, requests are not authenticated"
REFUSALS_LOG_SECONDS = 60.0

# A check of its own a gateway runs before routing (``infermodes up``'s token): the ``receive``
# to route the request with, or None when it refused (and answered) the request.
Guard = Callable[[Scope, Receive, Send], Awaitable[Receive | None]]


KEYS_LOOK_SECONDS = 1.0  # how often a signed request looks whether the keys' file changed
Keys = Callable[[], Mapping[str, str]]  # the access keys now: id -> secret


class AccessKeysFile:
    """The access keys in a file (the chart's ``gateway.auth.secretRef``, mounted): a signed
    request looks whether it changed at most every ``KEYS_LOOK_SECONDS``, and it is read again
    when it did, so keys added, rotated or removed in the Secret take effect without a restart
    (the kubelet rewrites the file within about a minute). A change that cannot be read keeps
    the keys read before, logged once; messages name the file and never a key."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self._keys, self._mark = self._read()  # at start, its error stops the gateway
        self._looked_at = clock()
        self._refused: str | None = None

    def _mark_now(self) -> tuple[int, int, int]:
        info = self.path.stat()  # through the kubelet's link: a new file at each change
        return info.st_ino, info.st_mtime_ns, info.st_size

    def _read(self) -> tuple[dict[str, str], tuple[int, int, int]]:
        try:
            mark = self._mark_now()
            text = self.path.read_text(encoding="utf-8")
            return parse_keys(text), mark
        except OSError as exc:
            raise ValueError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:  # its message would quote a byte of a secret
            raise ValueError(f"{self.path} is not UTF-8 text") from None
        except ValueError as exc:  # ``parse_keys``: names entries by position
            raise ValueError(f"{self.path}: {exc}") from None

    def __call__(self) -> Mapping[str, str]:
        now = self.clock()
        if now - self._looked_at < KEYS_LOOK_SECONDS:
            return self._keys
        self._looked_at = now
        try:
            if self._mark_now() == self._mark:
                return self._keys
            self._keys, self._mark = self._read()
        except (OSError, ValueError) as exc:
            if str(exc) != self._refused:
                self._refused = str(exc)
                log.error("access keys: %s; the %d read before stay", exc, len(self._keys))
            return self._keys
        self._refused = None
        log.info("access keys read again from %s: %d", self.path, len(self._keys))
        return self._keys


def access_keys(settings: GatewaySettings) -> Keys | None:
    """The access keys the settings give (``access_keys``, or ``access_keys_file`` followed
    as it changes: a gateway given a file is never open, and refuses every request while the
    file holds no key); None when there are none: the gateway is open. Raises ValueError
    naming the problem, never a key."""
    if settings.access_keys_file:
        return AccessKeysFile(Path(settings.access_keys_file))
    fixed = parse_keys(settings.access_keys.get_secret_value())
    return (lambda: fixed) if fixed else None


class AccessDeniedException(AuthError):
    """At an open gateway on loopback only: a request addressed to a name that is not this
    machine's, or sent by another web page (its Origin)."""


def loopback_only(host: str) -> bool:
    """Whether every address ``host`` binds (as ``listen`` resolves it) is a loopback one;
    False for all interfaces ("" or 0.0.0.0) and for a name that does not resolve."""
    try:
        found = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)  # fmt: skip
    except socket.gaierror:
        return False
    return bool(found) and all(ipaddress.ip_address(a[4][0]).is_loopback for a in found)


@functools.cache
def _host_name() -> str:
    return socket.gethostname().lower()


def loopback_name(host: str) -> bool:
    """Whether a Host header names this machine, whatever the port, as no DNS answer can:
    ``localhost`` or a name under it (browsers resolve those themselves), the machine's own
    host name, an address in 127/8 in any form a client may write (``127.1``), ``[::1]``, an
    IPv4-mapped loopback address, or the unspecified ``0.0.0.0``/``[::]`` (they reach loopback;
    a page's request to them carries its Origin, which ``foreign_caller`` refuses). An empty
    Host names nothing to rebind."""
    name = host.strip().lower()
    if name.startswith("["):
        if "]" not in name:
            return False  # not a host at all
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.removesuffix(".")
    if not name or name in ("localhost", _host_name()):
        return True
    if name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return address.is_loopback or address.is_unspecified or bool(mapped and mapped.is_loopback)
    try:
        return socket.inet_aton(name)[0] == 127
    except OSError:
        return False


def foreign_caller(scope: Scope) -> str | None:
    """Why a request to a gateway on loopback only is refused, or None: a Host that is not a
    loopback name (DNS rebinding), or an ``Origin`` that is not a loopback page (a browser sends
    one with a page's cross-site POST, which needs no preflight when its body is text/plain: a
    manifest applied, an endpoint invoked). A request without a Host (HTTP/1.0, which no browser
    sends) passes; clients outside browsers send no Origin."""
    host = origin = None
    for key, value in scope["headers"]:  # one pass: every request of an open `up` comes here
        if key == b"host":
            host = value
        elif key == b"origin":
            origin = value.decode("latin-1")
    if host is not None and not _machine_name(host):
        return f"request addressed to {clipped(host.decode('latin-1'), 100)!r}"
    if origin is not None:
        scheme, separator, rest = origin.partition("://")
        if not separator or scheme.lower() not in ("http", "https") or not loopback_name(rest):
            return f"request from the web page of origin {clipped(origin, 100)!r}"
    return None


@functools.lru_cache(maxsize=256)  # clients send the same few Host values again and again
def _machine_name(host: bytes) -> bool:
    return loopback_name(host.decode("latin-1"))


async def refused_caller(scope: Scope, send: Send) -> bool:
    """Refuse (403, saying why) what ``foreign_caller`` names."""
    foreign = foreign_caller(scope)
    if foreign is None:
        return False
    await refuse(scope, send, AccessDeniedException(
        f"{foreign} refused: this gateway listens on loopback only and answers requests "
        "addressed to localhost, 127.0.0.1 or [::1], from no other web page (a web page "
        "could otherwise use it through the browser)"
    ))  # fmt: skip
    return True


async def refuse(scope: Scope, send: Send, exc: InfermodesError) -> None:
    """Answer a request refused before routing, in the platform's error shape, with the
    request's id (``http.request_id``: the one its log line names, if any)."""
    status, headers, body = error_response(exc, request_id(scope))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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


def refusal_log(logger: logging.Logger = log) -> Throttled:
    """Where one process logs (to ``logger``) the requests of one kind it refuses, such as
    those unsigned or badly signed: anyone can send them, as fast as they like, so at most a
    line a minute, counting the rest."""
    return Throttled(logger, REFUSALS_LOG_SECONDS)


async def verified(
    verifier: Verifier,
    refusals: Throttled,
    limit: int,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> Receive | None:
    """The ``receive`` to route the request with, or None when it was refused (and answered).
    The headers are checked before the body is read; the body is at most ``limit`` bytes. So
    a signed invocation meets its endpoint's maxConcurrency after its body is read, unlike an
    unsigned one: the signature covers the body's hash, and a 429 before it is checked would
    tell anyone who knows an access key id (not a secret) that the endpoint exists and is
    saturated. (A client sending ``x-amz-content-sha256`` could be verified on its headers;
    boto3 sends it to S3 only.)"""
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
            refusals.info("refused %s %s: %s (request %s)", printable(scope["method"], 20),
                          printable(scope["path"]), type(exc).__name__, request_id(scope),
                          request=request_id(scope))  # fmt: skip
        await refuse(scope, send, exc)
        return None
    scope["infermodes.access_key"] = key_id
    return replay(body, receive)
