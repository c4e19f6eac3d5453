"""The small HTTP API of a running ``infermodes up`` (under ``/_infermodes``), which the CLI's
``apply``, ``get``, ``describe``, ``delete`` and ``logs`` talk to."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infermodes.endpoints.spec import spec_problems
from infermodes.http import ERROR_MEDIA_TYPE, error_json, read_body
from infermodes.local.manifests import (
    MAX_MANIFEST_BYTES,
    Manifest,
    ManifestError,
    NameTaken,
    OwnedElsewhere,
    Skipped,
    parse_bytes,
    refuse_twins,
)
from infermodes.local.supervisor import Supervisor
from infermodes.queueing.broker import NOTIFICATION_EXCHANGE
from infermodes.queueing.embedded import Notification

PREFIX = "/_infermodes"
SOURCE_HEADER = "x-infermodes-source"  # where an applied manifest came from, for its errors
INDEX_METHODS = ("GET", "HEAD")  # a browser's or curl's visit to /: no token, nothing done
MANIFESTS_MEDIA_TYPE = "application/json"
MAX_MANIFESTS_REQUEST_BYTES = 16 * MAX_MANIFEST_BYTES  # the files of one `apply -f DIR`, as JSON
LOG_TAIL_BYTES = 64 * 1024
STOPPED_LOG = (
    " (stopped: no process of the endpoint writes it now; one that ended, was scaled in, or "
    "ran its spec before the last change)"
)
NOTIFICATIONS_PER_CALL = 1000
LARGEST_ID = 2**63 - 1  # a notification id is a SQLite integer

Tail = Callable[[str, int, int], list[Notification]]  # pattern, after id, limit
# raises OwnedElsewhere for a manifest that would replace an endpoint the platform API made
OwnerCheck = Callable[[list[Manifest], str], None]


class ManifestFile(BaseModel):
    """One file of an ``apply -f DIR``: where it came from (for errors) and its text."""

    model_config = ConfigDict(extra="forbid")
    source: str
    text: str


class ManifestFiles(BaseModel):
    """``POST /_infermodes/manifests``: every file of one ``apply``, applied all or none."""

    model_config = ConfigDict(extra="forbid")
    files: list[ManifestFile] = Field(min_length=1)


def manifests_request(files: list[tuple[str, bytes]]) -> bytes:
    """The body of ``POST /_infermodes/manifests`` for files the client has read and checked
    (UTF-8 text); refused (a ManifestError) past ``MAX_MANIFESTS_REQUEST_BYTES``, which the
    server would refuse. A name that is not UTF-8 goes with U+FFFD in its place."""
    body = ManifestFiles(
        files=[
            ManifestFile(source=source.encode(errors="surrogateescape").decode(errors="replace"),
                         text=data.decode())
            for source, data in files
        ]
    ).model_dump_json().encode()  # fmt: skip
    if len(body) > MAX_MANIFESTS_REQUEST_BYTES:
        raise ManifestError(
            f"the {len(files)} files make a request of {len(body)} bytes, over the limit of "
            f"{MAX_MANIFESTS_REQUEST_BYTES} bytes for one apply: apply them in parts (a folder "
            "at a time)"
        )
    return body


def error(kind: str, message: str, status: int) -> Response:
    """The one error shape (``infermodes.http``)."""
    return Response(error_json(kind, message), status, media_type=ERROR_MEDIA_TYPE)


def not_found(name: str) -> Response:
    return error("NotFound", f"endpoint {name} not found", 404)


def notification(entry: Notification) -> dict[str, object]:
    """One entry of the topic log, its body as the JSON it is (text if it is not)."""
    try:
        body: object = json.loads(entry.body)
    except ValueError:
        body = entry.body.decode(errors="replace")
    return {"id": entry.id, "routingKey": entry.routing_key, "messageId": entry.message_id,
            "publishedAt": entry.published_at, "body": body}  # fmt: skip


INDEX = """infermodes up: InferenceEndpoints of every mode on this machine, on this port.

Invoke (no token needed):
  POST /endpoints/<name>/invocations          realtime and serverless endpoints
  POST /endpoints/<name>/async-invocations    async endpoints
Manage: infermodes apply -f FILE | get | describe NAME | logs NAME | delete NAME
  (INFERMODES_UP_URL={url} for this port). They call /_infermodes/..., which needs
  'Authorization: Bearer <the token in {token_file}>', readable by up's user alone.
Platform API (boto3's sagemaker clients): POST / signed with aws_access_key_id='{key_id}'
  and the token as aws_secret_access_key, endpoint_url={url}.
Metrics: GET /metrics. Health: GET /healthz, /readyz.
More: README.md, "On one machine: infermodes up", and docs/local.md.
"""


def index_router(url: str, token_file: Path, key_id: str) -> APIRouter:
    """``GET /``: a visit from a browser or curl says what answers here and where to look
    (the token's file is named, never the token; nothing is listed or done)."""
    router = APIRouter()
    text = INDEX.format(url=url, token_file=token_file, key_id=key_id)

    @router.api_route("/", methods=list(INDEX_METHODS), include_in_schema=False)
    async def index() -> PlainTextResponse:
        return PlainTextResponse(text)

    return router


def create_router(supervisor: Supervisor, tail: Tail | None, owners: OwnerCheck) -> APIRouter:
    """``tail``: the embedded queue's topic log (``EmbeddedQueue.tail``); None when async
    requests go to RabbitMQ, whose notifications are on its topic exchange. ``owners``: the
    platform API's refusal of a manifest over one of its endpoints (409)."""
    router = APIRouter(prefix=PREFIX)

    @router.get("/notifications")
    async def notifications(topic: str = "#", after: str = "0") -> Response:
        """Async notifications after id ``after`` whose routing key (``<endpoint>.success`` or
        ``<endpoint>.error``) matches the topic pattern, oldest first (at most
        ``NOTIFICATIONS_PER_CALL``: ask again after the last id for more)."""
        if tail is None:
            message = (
                "up uses RabbitMQ, which keeps no log of notifications: bind a queue of your "
                f"own to its topic exchange {NOTIFICATION_EXCHANGE} with the routing keys "
                "<endpoint>.success and <endpoint>.error (or a pattern such as #.error)"
            )
            return error("NotEmbedded", message, 400)
        if not after.isascii() or not after.isdigit():
            message = f"after must be a notification id (a whole number >= 0), not {after[:40]!r}"
            return error("ValidationError", message, 400)
        # past the largest id: nothing comes after it (it was a 500: SQLite's overflow, or
        # int()'s refusal past 4,300 digits)
        digits = after.lstrip("0") or "0"  # 0001 is 1
        position = min(int(digits), LARGEST_ID) if len(digits) < 20 else LARGEST_ID
        found = tail(topic, position, NOTIFICATIONS_PER_CALL)
        return JSONResponse({"items": [notification(entry) for entry in found]})

    @router.get("/endpoints")
    async def list_endpoints() -> JSONResponse:
        await supervisor.looked()
        items = [supervisor.shown(e) for _, e in sorted(supervisor.endpoints.items())]
        return JSONResponse({"items": items})

    @router.post("/endpoints")
    async def apply(request: Request) -> Response:
        """The body: one YAML stream; every document is checked before any is applied (a
        Secret is skipped, and said so in ``skipped``), and none may replace an endpoint the
        platform API made."""
        body = await read_body(request.scope, request.receive, MAX_MANIFEST_BYTES)  # or 413
        # the CLI sends the file's name in UTF-8; Starlette decodes headers as Latin-1
        named = request.headers.get(SOURCE_HEADER)
        source = "the request body"
        if named is not None:
            source = named.encode("latin-1").decode("utf-8", errors="replace")
        return await apply_all([(source, body)])

    @router.post("/manifests")
    async def apply_files(request: Request) -> Response:
        """The files of one ``infermodes apply -f`` (``ManifestFiles``), as one request: every
        document of every file is checked before any is applied, so a refusal applies none."""
        body = await read_body(request.scope, request.receive, MAX_MANIFESTS_REQUEST_BYTES)
        try:
            given = ManifestFiles.model_validate_json(body)
        except ValidationError as exc:
            problems = spec_problems(exc, "{}".format)[:2000]
            return error("InvalidRequest", f"not a set of manifest files: {problems}", 400)
        return await apply_all([(file.source, file.text.encode()) for file in given.files])

    async def apply_all(files: list[tuple[str, bytes]]) -> Response:
        """Every manifest of ``files`` (source, bytes), or none when one is refused."""
        skipped: list[Skipped] = []
        try:
            every: list[Manifest] = []
            for source, data in files:
                # in a thread: a slow body must not hold up the endpoints' invocations
                manifests = await asyncio.to_thread(parse_bytes, data, source, skipped)
                owners(manifests, source)
                every += manifests
            refuse_twins(every)
            every = [supervisor.placed(manifest) for manifest in every]
        except (OwnedElsewhere, NameTaken) as exc:
            return error("Conflict", str(exc), 409)
        except ManifestError as exc:
            return error("InvalidManifest", str(exc), 400)
        applied = [{"name": m.name, "result": supervisor.apply(m)} for m in every]
        return JSONResponse({"applied": applied,
                             "skipped": [secret.message() for secret in skipped]})  # fmt: skip

    @router.get("/endpoints/{name}")
    async def get_endpoint(name: str) -> Response:
        await supervisor.looked()
        endpoint = supervisor.endpoints.get(name)
        return JSONResponse(supervisor.shown(endpoint)) if endpoint else not_found(name)

    @router.delete("/endpoints/{name}")
    async def delete_endpoint(name: str) -> Response:
        """``waiting``: requests its queue keeps for an endpoint of this name (None: unknown)."""
        waiting = await asyncio.to_thread(supervisor.waiting, name)
        if not supervisor.delete(name):
            return not_found(name)
        return JSONResponse({"deleted": name, "waiting": waiting})

    @router.get("/endpoints/{name}/logs")
    async def logs(name: str) -> Response:
        """The end of each of the endpoint's process logs, one after the other, each headed by
        its file's name; one no process of the endpoint writes now says so (after a change of
        mode, the old mode's logs were shown as if they were the endpoint's now)."""
        if name not in supervisor.endpoints:
            return not_found(name)
        parts = []
        for path, current in supervisor.log_paths(name):
            with path.open("rb") as file:
                file.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
                text = file.read().decode(errors="replace")
            parts.append(f"==> {path.name}{'' if current else STOPPED_LOG} <==\n{text}")
        return PlainTextResponse("\n".join(parts))

    return router
