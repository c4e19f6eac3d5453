"""Success and error notifications of async requests: a RabbitMQ topic exchange (routing keys
``<endpoint>.success`` and ``<endpoint>.error``) and optional HTTP webhooks.

Delivery is at least once: a redelivered request whose result exists is notified again, so
consumers de-duplicate by ``inferenceId``. The body follows the managed platform's shape, with
the result inline when it is at most 128 KB.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from infermodes import destinations
from infermodes.errors import BrokerUnavailable
from infermodes.logs import redacted_url
from infermodes.metrics import WorkerMetrics
from infermodes.queueing.broker import NOTIFICATION_EXCHANGE, Publisher
from infermodes.queueing.messages import Failure, InvocationRequest

log = logging.getLogger("infermodes.notifications")

INLINE_RESULT_LIMIT = 128 * 1024
WEBHOOK_TIMEOUT_SECONDS = 5.0
WEBHOOK_BACKOFF_SECONDS = 0.5


def webhook_client() -> httpx.Client:
    # no proxy from the environment: it would reach addresses ``destinations.check`` never saw
    return httpx.Client(timeout=WEBHOOK_TIMEOUT_SECONDS, trust_env=False)


@dataclass(frozen=True)
class Webhooks:
    """URLs POSTed each success and each error notification (the spec's successWebhook and
    errorWebhook)."""

    success: list[str] = field(default_factory=list)
    error: list[str] = field(default_factory=list)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def routing_key(endpoint: str, success: bool) -> str:
    return f"{endpoint}.{'success' if success else 'error'}"


def success_body(
    request: InvocationRequest, completed_at: float, result: bytes | None
) -> dict[str, object]:
    """``result`` is the output when small enough to inline (see ``INLINE_RESULT_LIMIT``)."""
    body = _common(request.inference_id, request.endpoint, request.accepted_at, completed_at)
    body["invocationStatus"] = "Completed"
    body["requestParameters"] = _request_parameters(request)
    body["responseParameters"] = {
        "contentType": request.accept,
        "outputLocation": request.output_location,
    }
    if result is not None and len(result) <= INLINE_RESULT_LIMIT:
        body["responseBody"] = {
            "content": result.decode("utf-8", "replace"),
            "encoding": "STRING",
        }
    return body


def error_body(
    inference_id: str | None,
    endpoint: str,
    failure: Failure,
    failure_location: str | None,
    completed_at: float,
    request: InvocationRequest | None,
) -> dict[str, object]:
    """``request`` is None when the message itself could not be read (only salvaged fields)."""
    received = request.accepted_at if request is not None else None
    body = _common(inference_id, endpoint, received, completed_at)
    body["invocationStatus"] = "Failed"
    if request is not None:
        body["requestParameters"] = _request_parameters(request)
    body["responseParameters"] = {"failureLocation": failure_location}
    body["failureReason"] = failure.reason
    body["failureMessage"] = failure.message
    return body


def _common(
    inference_id: str | None, endpoint: str, received_at: float | None, completed_at: float
) -> dict[str, object]:
    return {
        "eventName": "InferenceResult",
        "eventVersion": "1.0",
        "eventSource": "infermodes",
        "inferenceId": inference_id,
        "endpointName": endpoint,
        "receivedTime": _iso(received_at) if received_at is not None else None,
        "eventTime": _iso(completed_at),
    }


def _request_parameters(request: InvocationRequest) -> dict[str, object]:
    return {
        "endpointName": request.endpoint,
        "inputLocation": request.input_location,
        "contentType": request.content_type,
        "accept": request.accept,
        "customAttributes": request.custom_attributes,
        "invocationTimeoutSeconds": request.invocation_timeout_seconds,
    }


class Notifier:
    """Publishes to the topic exchange when ``topic`` (confirmed; a failure raises
    BrokerUnavailable so the request is retried), then POSTs to each webhook of the outcome
    with bounded retries (a webhook that stays down is logged and counted, and does not hold
    the queue)."""

    def __init__(
        self,
        channel: Publisher,
        metrics: WorkerMetrics,
        webhooks: Webhooks,
        webhook_attempts: int,
        topic: bool = True,
        new_client: Callable[[], httpx.Client] = webhook_client,
        check: Callable[[str], destinations.Checked] = destinations.check,
    ) -> None:
        self.channel = channel
        self.metrics = metrics
        self.webhooks = webhooks
        self.webhook_attempts = webhook_attempts
        self.topic = topic
        self.new_client = new_client
        self.clients: dict[str, httpx.Client] = {}  # by webhook origin
        self.clients_lock = threading.Lock()
        self.check = check  # where a webhook may be POSTed (``destinations``)

    def send(self, endpoint: str, body: dict[str, object], success: bool) -> None:
        payload = json.dumps(body).encode()
        if self.topic:
            self._publish(endpoint, payload, str(body.get("inferenceId") or ""), success)
        for url in self.webhooks.success if success else self.webhooks.error:
            result = "sent" if self._post(url, payload) else "failed"
            self.metrics.notifications.labels("webhook", result).inc()

    def _publish(self, endpoint: str, payload: bytes, message_id: str, success: bool) -> None:
        try:
            self.channel.publish(
                NOTIFICATION_EXCHANGE,
                routing_key(endpoint, success),
                payload,
                message_id,
                mandatory=False,
            )
        except BrokerUnavailable:
            self.metrics.notifications.labels("topic", "failed").inc()
            raise
        self.metrics.notifications.labels("topic", "sent").inc()

    def _post(self, url: str, payload: bytes) -> bool:
        """Logs name the webhook by scheme and host only: its path is often its token. Each
        attempt looks the host up again and connects to the addresses it checked."""
        shown = redacted_url(url, keep_path=False)
        for attempt in range(self.webhook_attempts):
            if attempt:
                time.sleep(WEBHOOK_BACKOFF_SECONDS * 2 ** (attempt - 1))
            checked = self.check(url)
            if checked.refusal is not None:
                log.error("webhook %s refused, not sent: %s", shown, checked.refusal)
                return False
            if not checked.addresses:
                log.warning("webhook %s failed: its host does not resolve", shown)
                continue
            try:
                response = self._post_to(url, checked.addresses, payload)
                if response.status_code < 300:
                    return True
                log.warning("webhook %s answered %d", shown, response.status_code)
            except httpx.HTTPError as exc:
                log.warning("webhook %s failed: %s", shown, _reason(exc, url, shown))
        log.error("webhook %s: giving up after %d attempts", shown, self.webhook_attempts)
        return False

    def _post_to(self, url: str, addresses: tuple[str, ...], payload: bytes) -> httpx.Response:
        """POST to each address in turn until one takes the connection, as a client that
        resolved the name itself would, with the name in Host and in TLS (its SNI, and the
        name its certificate must carry)."""
        target = httpx.URL(url)
        origin = target.netloc.decode("ascii")
        headers = {"content-type": "application/json", "host": origin}
        extensions = {"sni_hostname": target.raw_host.decode("ascii")}
        client = self._client(f"{target.scheme}://{origin}")

        def send(address: str) -> httpx.Response:
            return client.post(
                target.copy_with(host=address),
                content=payload,
                headers=headers,
                extensions=extensions,
            )

        *others, last = addresses
        for address in others:
            with contextlib.suppress(httpx.ConnectError, httpx.ConnectTimeout):  # the next one
                return send(address)
        return send(last)

    def _client(self, origin: str) -> httpx.Client:
        """A client of its own for each webhook origin (scheme, name, port): its kept
        connections are keyed by address, so one verified for a name must never carry
        another name's requests to the same address."""
        with self.clients_lock:
            client = self.clients.get(origin)
            if client is None:
                client = self.clients[origin] = self.new_client()
            return client


def _reason(exc: httpx.HTTPError, url: str, shown: str) -> str:
    """The error's words without the URL's path, as written or as sent (to an address)."""
    reason = str(exc).replace(url, shown)
    with contextlib.suppress(RuntimeError):  # an error with no request
        reason = reason.replace(str(exc.request.url), shown)
    return reason or type(exc).__name__
