"""Backlog figures of an async endpoint's queue, for the scaler.

The management API gives ready, unacknowledged (in flight on a worker) and consumer counts.
When it cannot be reached, the AMQP passive declare still gives ready and consumers, but not
in-flight work: ``unacked`` is then None ("unknown"), never 0, because a scaler that reads busy
workers as an empty queue scales them away mid-request (the flaw of the common AMQP scaler).
Management figures are sampled by the broker (every ``collect_statistics_interval``), so
they may lag by that much.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import httpx

from infermodes.queue import connect, queue_name

log = logging.getLogger("infermodes.backlog")

MANAGEMENT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Backlog:
    ready: int
    unacked: int | None  # None: unknown (management API unreachable), never a guess of 0
    consumers: int
    source: str  # "management" or "amqp"

    @property
    def total(self) -> int | None:
        """Work the endpoint has: waiting plus in flight; None when in-flight is unknown."""
        return None if self.unacked is None else self.ready + self.unacked


def _vhost(amqp_url: str) -> str:
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def from_management(
    management_url: str, vhost: str, queue: str, client: httpx.Client | None = None
) -> Backlog:
    """``management_url`` may carry credentials: ``http://user:pass@host:15672``."""
    parts = urlsplit(management_url)
    auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
    base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{parts.path.rstrip('/')}"
    url = f"{base}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
    http = client or httpx.Client(timeout=MANAGEMENT_TIMEOUT_SECONDS)
    try:
        response = http.get(url, auth=auth)
    finally:
        if client is None:
            http.close()
    response.raise_for_status()
    info = response.json()
    return Backlog(
        ready=int(info.get("messages_ready", 0)),
        unacked=int(info.get("messages_unacknowledged", 0)),
        consumers=int(info.get("consumers", 0)),
        source="management",
    )


def from_amqp(amqp_url: str, queue: str) -> Backlog:
    connection = connect(amqp_url)
    try:
        method = connection.channel().queue_declare(queue, passive=True).method
    finally:
        if connection.is_open:
            connection.close()
    return Backlog(
        ready=method.message_count, unacked=None, consumers=method.consumer_count, source="amqp"
    )


def backlog(endpoint: str, amqp_url: str, management_url: str | None) -> Backlog:
    """The endpoint's backlog: management API first, AMQP passive declare as the fallback.
    Raises pika's error when neither answers (the caller keeps its last decision)."""
    queue = queue_name(endpoint)
    if management_url:
        try:
            return from_management(management_url, _vhost(amqp_url), queue)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("management API unavailable (%s); falling back to AMQP", exc)
    return from_amqp(amqp_url, queue)
