"""The CLI's side of the ``/_infermodes`` API: requests to a running ``infermodes up`` and
the tables and text they print."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from infermodes.local.access import TokenFileError, read_token
from infermodes.local.api import MANIFESTS_MEDIA_TYPE, PREFIX, manifests_request
from infermodes.local.manifests import (
    ManifestError,
    Source,
    manifest_files,
    parse_bytes,
    read_manifest,
    refuse_twins,
    source_of,
)
from infermodes.settings import MAX_GATEWAY_INVOCATION_SECONDS

TIMEOUT_SECONDS = 70.0  # an API call (an apply, a delete) waits at most this
# an invocation is answered within up's --invocation-timeout-seconds, whatever it is set to
INVOKE_TIMEOUT_SECONDS = MAX_GATEWAY_INVOCATION_SECONDS + 10.0
COLUMNS = ("NAME", "MODE", "PHASE", "READY", "DESIRED", "BACKLOG", "PROGRESS", "AGE")


class UpError(RuntimeError):
    """``up`` is not running, or refused the request; the message says which."""


class Client:
    """``token_file``: where ``up`` wrote its token (``<state dir>/token``), which the
    ``/_infermodes`` API needs; invocations need none."""

    def __init__(self, url: str, token_file: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file

    def authorization(self) -> tuple[dict[str, str], str]:
        """The header that carries the token, and why there is none when it cannot be read
        (said only if ``up`` then refuses the request: it may not be running at all)."""
        if self.token_file is None:
            return {}, "no token file given"
        try:
            return {"Authorization": f"Bearer {read_token(self.token_file)}"}, ""
        except TokenFileError as exc:
            return {}, str(exc)

    def request(
        self, method: str, path: str, timeout: float = TIMEOUT_SECONDS, **options: Any
    ) -> httpx.Response:
        try:
            response = httpx.request(method, f"{self.url}{path}", timeout=timeout, **options)
        except httpx.ConnectError:
            raise UpError(
                f"infermodes up is not running at {self.url} (start it with `infermodes up`, "
                "or give --url)"
            ) from None
        except httpx.HTTPError as exc:
            raise UpError(f"{self.url}: {exc}") from None
        return response

    def api(self, method: str, path: str, **options: Any) -> Any:
        """A call to the API; its errors become ``UpError`` with the server's message."""
        authorization, unread = self.authorization()
        headers = {**options.pop("headers", {}), **authorization}
        response = self.request(method, f"{PREFIX}{path}", headers=headers, **options)
        if response.status_code >= 400:
            try:
                message = response.json()["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            if response.status_code == 401 and unread:
                raise UpError(f"{message}; {unread}")
            if response.status_code == 404 and not str(message).startswith("endpoint "):
                # up's one 404 is an endpoint not found: this is another server's port
                raise UpError(
                    f"{self.url} is not infermodes up (it has no {PREFIX}{path}); give up's "
                    "address with --url or INFERMODES_UP_URL"
                )
            raise UpError(message)
        return response.json() if "json" in response.headers.get("content-type", "") else (
            response.text
        )  # fmt: skip

    def apply(self, path: Source) -> tuple[list[dict[str, str]], list[str]]:
        """What each endpoint's apply did, and why a document was skipped (a Secret). Every
        file (or standard input, for ``STDIN``) is read and checked here, then all are sent in
        one request that ``up`` applies all or none (``POST /_infermodes/manifests``), as
        ``up -f`` does: a bad one among them, or one ``up`` refuses, applies none."""
        try:
            files = [(source_of(file), read_manifest(file)) for file in manifest_files(path)]
            manifests = [m for source, data in files for m in parse_bytes(data, source, [])]
            refuse_twins(manifests)  # up says what it skips
            body = manifests_request(files)
        except ManifestError as exc:
            raise UpError(str(exc)) from None
        result = self.api("POST", "/manifests", content=body,
                          headers={"content-type": MANIFESTS_MEDIA_TYPE})  # fmt: skip
        return result["applied"], result.get("skipped", [])


def age(created: str, now: datetime | None = None) -> str:
    """kubectl's short age: 45s, 12m, 3h, 2d."""
    try:
        then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def row(obj: Mapping[str, Any], now: datetime | None = None) -> tuple[str, ...]:
    """The columns of ``kubectl get ie`` for one endpoint (empty where kubectl prints none)."""
    status = obj.get("status") or {}
    backlog = (status.get("backlog") or {}).get("total")
    return (
        str(obj["metadata"]["name"]),
        str(obj["spec"]["mode"]),
        str(status.get("phase", "")),
        str(status.get("readyReplicas", "")),
        str(status.get("desiredReplicas", "")),
        "" if backlog is None else str(backlog),
        str((status.get("progress") or {}).get("text", "")),
        age(str(obj["metadata"].get("creationTimestamp", "")), now),
    )


def table(rows: list[tuple[str, ...]]) -> str:
    """Columns padded as kubectl pads them (three spaces between)."""
    every = [COLUMNS, *rows]
    widths = [max(len(r[i]) for r in every) for i in range(len(COLUMNS))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in every
    )


def describe(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    lines = [
        f"Name:      {obj['metadata']['name']}",
        f"Namespace: {obj['metadata'].get('namespace')}",
        f"Mode:      {obj['spec']['mode']}",
        f"Model:     {obj['spec']['model']['uri']}",
        f"Phase:     {status.get('phase')} ({status.get('reason')})",
    ]
    if status.get("message"):
        lines.append(f"Message:   {status['message']}")
    if status.get("url"):
        lines.append(f"URL:       POST {status['url']}")
    lines.append(f"Replicas:  {status.get('readyReplicas')} ready of "
                 f"{status.get('desiredReplicas')} desired")  # fmt: skip
    if status.get("backlog"):
        backlog = status["backlog"]
        oldest = backlog.get("oldestAgeSeconds")
        waited = "" if oldest is None else f", the oldest waiting {oldest:.1f} s"
        jobs = backlog.get("waitingWebhookJobs") or 0
        hooks = f"; {jobs} webhook job(s) waiting in the outbox" if jobs else ""
        lines.append(
            f"Backlog:   {backlog['ready']} ready, {backlog['inFlight']} in flight{waited}{hooks}"
        )
    if status.get("progress"):
        lines.append(f"Progress:  {status['progress']['text']} objects, "
                     f"{status['progress']['recordsDone']} records")  # fmt: skip
    lines.append("Processes:")
    for process in status.get("processes") or []:
        ready = process.get("ready")  # None: a batch instance, which runs to its end
        state = f"exited {process['lastExit']}"
        if process["running"]:
            state = "running" + ("" if ready is None else ", ready" if ready else ", not ready")
        port = f" port {process['port']}" if process.get("port") else ""
        lines.append(f"  {process['key']}  pid {process['pid']}{port}  {state}  "
                     f"restarts {process['restarts']}  log {process['log']}")  # fmt: skip
    lines.append("Events:")
    lines += [f"  {event}" for event in status.get("events") or []]
    return "\n".join(lines)
