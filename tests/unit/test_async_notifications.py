"""Notification bodies and delivery: topic first, then a webhook job to the outbox (either's
failure is the caller's to retry); the outbox's sender POSTs webhooks with bounded retries."""

import contextlib
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping

import httpx
import pytest
from prometheus_client import CollectorRegistry

from infermodes import destinations
from infermodes.errors import BrokerUnavailable
from infermodes.metrics import WorkerMetrics
from infermodes.queueing.broker import (
    DEAD_LETTER_EXCHANGE,
    OUTBOX_DELIVERY_LIMIT,
    OUTBOX_SENDS,
    OUTBOX_UNSETTLED,
    Delivery,
    Settle,
)
from infermodes.queueing.messages import Failure
from infermodes.queueing.notifications import (
    INLINE_RESULT_LIMIT,
    ORPHANED_JOB_SECONDS,
    Cutoff,
    JobStep,
    Notifier,
    Outbox,
    WebhookJob,
    Webhooks,
    WebhookSender,
    _iso,
    error_body,
    failed_send,
    read_webhook_job,
    retry_delay,
    routing_key,
    step_of,
    success_body,
    webhook_job,
    webhook_key,
)
from tests.unit.async_samples import invocation

REQUEST = invocation(accepted_at=0.0)
EMPTY = httpx.ByteStream(b"")  # a body still to read, as a server's answer has


def test_success_body_inlines_small_results_only() -> None:
    small = success_body(REQUEST, 1.5, b"1.0\n")
    assert small["inferenceId"] == "abc-1" and small["invocationStatus"] == "Completed"
    assert small["receivedTime"] == "1970-01-01T00:00:00.000+00:00"
    assert small["eventTime"] == "1970-01-01T00:00:01.500+00:00"
    assert small["responseParameters"] == {
        "contentType": "text/csv",
        "outputLocation": "s3://b/out/abc-1.out",
    }
    assert small["responseBody"] == {"content": "1.0\n", "encoding": "STRING"}
    assert "responseBody" in success_body(REQUEST, 1.0, b"x" * INLINE_RESULT_LIMIT)
    assert "responseBody" not in success_body(REQUEST, 1.0, None)


def test_error_body_without_a_readable_request() -> None:
    failure = Failure("AttemptsExhausted", "failed 3 times", retry=False)
    body = error_body("abc", "ep", failure, "s3://b/fail/abc.error", 2.0, None)
    assert body["invocationStatus"] == "Failed" and body["receivedTime"] is None
    assert body["responseParameters"] == {"failureLocation": "s3://b/fail/abc.error"}
    assert (body["failureReason"], body["failureMessage"]) == (
        "AttemptsExhausted",
        "failed 3 times",
    )
    assert "requestParameters" not in body
    assert routing_key("ep", False) == "ep.error" and routing_key("ep", True) == "ep.success"


class FakeChannel:
    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.published: list[tuple[str, str, str, bool]] = []
        self.bodies: list[bytes] = []
        self.headers: list[Mapping[str, str | int] | None] = []
        self.delays: list[int] = []

    def publish(
        self,
        exchange: str,
        key: str,
        body: bytes,
        message_id: str,
        mandatory: bool,
        headers: Mapping[str, str | int] | None = None,
        delay: int = 0,
    ) -> None:
        if self.down:
            raise BrokerUnavailable("down")
        self.published.append((exchange, key, message_id, mandatory))
        self.bodies.append(body)
        self.headers.append(headers)
        self.delays.append(delay)


def outbox(down: bool = False) -> Outbox:
    """Endpoint ep's outbox, over a channel that records what is put back or dead-lettered."""
    return Outbox(FakeChannel(down), "ep")


def written(sender: WebhookSender) -> FakeChannel:
    """What the sender put back in its outbox, or dead-lettered."""
    assert isinstance(sender.outbox.channel, FakeChannel)
    return sender.outbox.channel


OUTBOX = ("", "infermodes.async.ep.webhooks")
DEAD_LETTERS = (DEAD_LETTER_EXCHANGE, "infermodes.async.ep.webhooks")


RESOLVED = {"hook.test": ["127.0.0.9"], "hooks.test": ["127.0.0.9"],
            "metadata.test": ["10.0.0.1", "169.254.169.254"]}  # fmt: skip


def numeric(host: str) -> list[str]:
    """An address literal as the C library reads it; a name: none (no DNS query)."""
    try:
        found = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return []
    return [str(info[4][0]) for info in found]


def check(url: str) -> destinations.Checked:
    """The workers' check, with names resolved here (tests ask no DNS server)."""
    return destinations.check(url, lambda host: RESOLVED.get(host) or numeric(host))


HOOKS = Webhooks(["http://hook.test/ok"], ["http://hook.test/failed", "http://hook.test/all"])


def notifier(
    channel: FakeChannel, topic: bool = True, hooks: Webhooks = HOOKS
) -> tuple[Notifier, WorkerMetrics]:
    metrics = WorkerMetrics(CollectorRegistry())
    return Notifier(channel, metrics, hooks, topic), metrics


def webhooks(
    statuses: list[int], hooks: Webhooks = HOOKS
) -> tuple[WebhookSender, list[tuple[str, bytes]]]:
    """A sender whose webhooks answer ``statuses`` in turn (200 once they are spent)."""
    posted: list[tuple[str, bytes]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append((request.url.path, request.content))
        return httpx.Response(statuses.pop(0) if statuses else 200, stream=EMPTY)

    http = httpx.Client(transport=httpx.MockTransport(answer))
    metrics = WorkerMetrics(CollectorRegistry())
    return WebhookSender(metrics, hooks, 3, outbox(), lambda: http, check), posted


def test_topic_then_one_webhook_job_for_an_outcome_with_webhooks() -> None:
    """The job names no URL (a Secret's would be in clear on the broker): its outcome says
    which webhooks the sender POSTs."""
    channel = FakeChannel()
    sender, _ = notifier(channel, hooks=Webhooks(["http://hook.test/token"], []))
    sender.send("ep", {"inferenceId": "abc"}, success=True)
    assert channel.published == [
        ("infermodes.notifications", "ep.success", "abc", False),
        ("", "infermodes.async.ep.webhooks", "abc", True),
    ]
    assert b"token" not in channel.bodies[1]
    assert read_webhook_job(channel.bodies[1]) == WebhookJob({"inferenceId": "abc"}, True)
    sender.send("ep", {"inferenceId": "abd"}, success=False)  # no error webhook: no job
    assert channel.published[2:] == [("infermodes.notifications", "ep.error", "abd", False)]


def test_without_webhooks_nothing_but_the_topic_is_published() -> None:
    channel = FakeChannel()
    sender, _ = notifier(channel, hooks=Webhooks())
    sender.send("ep", {"inferenceId": "abc"}, success=True)
    assert channel.published == [("infermodes.notifications", "ep.success", "abc", False)]


def test_without_the_topic_only_the_webhook_job_is_published() -> None:
    channel = FakeChannel()
    sender, _ = notifier(channel, topic=False)
    sender.send("ep", {"inferenceId": "abc"}, success=False)
    assert channel.published == [("", "infermodes.async.ep.webhooks", "abc", True)]


def test_topic_failure_raises_for_the_caller_to_retry() -> None:
    channel = FakeChannel(down=True)
    sender, metrics = notifier(channel)
    with pytest.raises(BrokerUnavailable):
        sender.send("ep", {"inferenceId": "abc"}, success=True)
    assert metrics.notifications.labels("topic", "failed")._value.get() == 1


def test_a_job_is_posted_to_its_outcomes_webhooks_with_retries_then_acked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("infermodes.queueing.notifications.WEBHOOK_BACKOFF_SECONDS", 0.0)
    sender, posted = webhooks([503, 500])
    body = {"inferenceId": "abc", "invocationStatus": "Completed"}
    assert sender.handle(Delivery(webhook_job(body, True), 0)) is Settle.ACK
    assert [path for path, _ in posted] == ["/ok"] * 3  # two failures, then 200
    assert posted[-1][1] == json.dumps(body).encode()  # the topic's bytes
    assert sender.handle(Delivery(webhook_job({"inferenceId": "abd"}, False), 0)) is Settle.ACK
    assert [path for path, _ in posted[3:]] == ["/failed", "/all"]  # the error webhooks only


@pytest.mark.parametrize("data", [b"", b"[]", b'{"success": 1, "notification": {}}', b"\xff"])
def test_an_outbox_message_that_is_no_job_is_dropped(data: bytes) -> None:
    sender, posted = webhooks([])
    assert read_webhook_job(data) is None
    assert sender.handle(Delivery(data, 0)) is Settle.ACK
    assert posted == []


def test_a_webhook_that_stays_down_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("infermodes.queueing.notifications.WEBHOOK_BACKOFF_SECONDS", 0.0)
    sender, posted = webhooks([500] * 10)
    sender.post({"inferenceId": "abc"}, True)
    assert len(posted) == 3


@pytest.mark.timeout(30)
def test_a_stop_during_a_webhook_back_off_sends_its_job_back_to_the_outbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker told to stop (SIGTERM, a scale-in) while a webhook waits out its back-off:
    the wait ends, and the job goes back to the outbox (requeued) for a worker that runs on,
    its tries unspent, rather than made at once against a receiver down for a moment and then
    acked as failed, the notification lost though tries were left."""
    monkeypatch.setattr("infermodes.queueing.notifications.WEBHOOK_BACKOFF_SECONDS", 3600.0)
    stopping = threading.Event()
    posted: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(request.url.path)
        stopping.set()  # the stop comes during the first try
        return httpx.Response(503, stream=EMPTY)

    http = httpx.Client(transport=httpx.MockTransport(answer))
    metrics = WorkerMetrics(CollectorRegistry())
    hooks = Webhooks(["http://hook.test/ok"], [])
    sender = WebhookSender(metrics, hooks, 3, outbox(), lambda: http, check, stopping)
    job = webhook_job({"inferenceId": "abc"}, True)
    assert sender.handle(Delivery(job, 1)) is Settle.ACK  # put back first, confirmed
    assert posted == ["/ok"]
    for result in ("sent", "failed"):
        assert metrics.notifications.labels("webhook", result)._value.get() == 0
    # a new message, its sends uncounted: a return is no send, nor a delivery of it
    assert (written(sender).published, written(sender).bodies) == ([(*OUTBOX, "abc", True)], [job])
    assert metrics.webhook_jobs_returned.labels("stopping")._value.get() == 1


def test_webhook_logs_show_no_token(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A webhook's path is often its secret (chat services put the token there)."""
    monkeypatch.setattr("infermodes.queueing.notifications.WEBHOOK_BACKOFF_SECONDS", 0.0)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    metrics = WorkerMetrics(CollectorRegistry())
    hooks = Webhooks(["https://hooks.test/services/T0/B0/token123?sig=abc"], [])
    http = httpx.Client(transport=httpx.MockTransport(refuse))
    sender = WebhookSender(metrics, hooks, 2, outbox(), lambda: http, check)
    sender.post({"inferenceId": "abc"}, True)
    logged = caplog.text
    assert "https://hooks.test/..." in logged and "this send gave up after 2 attempts" in logged
    assert "token123" not in logged and "sig=abc" not in logged


def test_each_webhook_log_line_names_the_request_it_was_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Under load, a webhook that is down logs for every request: each line says which."""
    monkeypatch.setattr("infermodes.queueing.notifications.WEBHOOK_BACKOFF_SECONDS", 0.0)
    sender, _ = webhooks([500] * 10, Webhooks(["http://hook.test/ok"], []))
    with caplog.at_level(logging.WARNING, "infermodes"):
        sender.post({"inferenceId": "req-7"}, success=True)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines  # three answers, then giving up
    assert all(line.startswith("inference req-7: webhook http://hook.test/...") for line in lines)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]:8080/hook",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://metadata.test/hook",  # a name that resolves to one
    ],
)
def test_a_webhook_at_a_link_local_address_is_not_posted(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Where clouds serve instance metadata and credentials: the worker never POSTs there,
    whatever the spec let through (a name resolving there now)."""
    sender, posted = webhooks([], hooks=Webhooks([url], []))
    sender.post({"inferenceId": "abc"}, True)
    assert posted == []
    assert "refused, not sent" in caplog.text and "link-local or metadata" in caplog.text
    failed = sender.metrics.notifications.labels("webhook", "failed")._value.get()
    assert failed == 1


def test_loopback_and_private_webhooks_are_posted() -> None:
    urls = ["http://127.0.0.1:9/a", "http://10.1.2.3/b", "http://[::1]:9/c", "http://hook.test/d"]
    sender, posted = webhooks([], hooks=Webhooks(urls, []))
    sender.post({"inferenceId": "abc"}, True)
    assert [path for path, _ in posted] == ["/a", "/b", "/c", "/d"]


def test_a_webhook_is_posted_to_the_addresses_checked_with_its_name_in_host_and_tls() -> None:
    """Checked, then looked up again by the HTTP client, a name could lead elsewhere (DNS
    rebinding to a metadata address): the POST goes to the address checked, the next one
    when it refuses the connection, the name kept for Host and the TLS certificate."""
    sent: list[tuple[str, str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append((str(request.url), request.headers["host"], request.extensions["sni_hostname"]))
        if request.url.host == "::1":  # refused, or silently dropped: the next address
            raise httpx.ConnectTimeout("timed out", request=request)
        return httpx.Response(200, stream=EMPTY)

    resolved = iter([["::1", "127.0.0.9"], ["169.254.169.254"]])  # the second lookup rebinds
    hooks = Webhooks(["https://hook.test:8443/t?s=1"], [])
    sender = WebhookSender(WorkerMetrics(CollectorRegistry()), hooks, 3, outbox(),
        lambda: httpx.Client(transport=httpx.MockTransport(answer)),
        lambda url: destinations.check(url, lambda host: next(resolved)),
    )  # fmt: skip
    sender.post({"inferenceId": "abc"}, True)
    assert sent == [
        ("https://[::1]:8443/t?s=1", "hook.test:8443", "hook.test"),
        ("https://127.0.0.9:8443/t?s=1", "hook.test:8443", "hook.test"),
    ]
    sender.post({"inferenceId": "abd"}, True)  # now it resolves to metadata
    assert len(sent) == 2


ENDLESS_ANSWERS = {  # the answer's start, what follows it forever, attempts made, outcome
    "headers a byte at a time": (b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", 3, "failed"),
    "an endless body": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1\r\na\r\n",
        1,
        "sent",
    ),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("answer", ENDLESS_ANSWERS.values(), ids=list(ENDLESS_ANSWERS))
def test_a_webhook_whose_answer_never_ends_does_not_hold_the_request(
    monkeypatch: pytest.MonkeyPatch, answer: tuple[bytes, bytes, int, str]
) -> None:
    """Each read is bounded, not the answer: a webhook that keeps sending (its headers slowly,
    or a body without end) must not keep the request, and its worker's slot, forever."""
    monkeypatch.setattr("infermodes.queueing.notifications.WEBHOOK_BACKOFF_SECONDS", 0.0)
    monkeypatch.setattr(
        "infermodes.queueing.notifications.WEBHOOK_ANSWER_SECONDS", 0.5, raising=False
    )
    start, more, attempts, outcome = answer
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    connections: list[socket.socket] = []

    def keep_answering(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.recv(65536)
            conn.sendall(start)
            while not stop.wait(0.05):
                conn.sendall(more)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                connections.append(conn)
                threading.Thread(target=keep_answering, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    metrics = WorkerMetrics(CollectorRegistry())
    sender = WebhookSender(metrics, Webhooks([url], []), 3, outbox(), check=check)
    try:
        sender.post({"inferenceId": "abc"}, True)
    finally:
        stop.set()
        server.close()
    assert len(connections) == attempts  # slow headers: each attempt cut off, then the next
    assert metrics.notifications.labels("webhook", outcome)._value.get() == 1


def test_a_webhook_that_answers_keeps_its_connection_between_posts() -> None:
    """The cutoff needs the socket a POST goes over, but not a connection per POST: one
    connection per webhook origin and thread carries them all (no TIME_WAIT pile per POST)."""
    peers: list[tuple[str, int]] = []

    class Answer(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            peers.append(self.client_address)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    metrics = WorkerMetrics(CollectorRegistry())
    sender = WebhookSender(metrics, Webhooks([url], []), 3, outbox(), check=check)
    try:
        for number in range(3):
            sender.post({"inferenceId": f"abc-{number}"}, True)
    finally:
        server.shutdown()
        server.server_close()
    assert len(peers) == 3 and len(set(peers)) == 1
    assert metrics.notifications.labels("webhook", "sent")._value.get() == 3


def test_a_try_whose_time_is_up_tries_no_further_address() -> None:
    """A name with several addresses that drop connections: each connect waits its 5 s
    timeout, and the cutoff, with no socket to shut yet, did not end the try, so it lasted
    5 s for each address, not the 10 s the try is given. Past its time, no next address."""
    expired = threading.Event()
    tried: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        tried.append(request.url.host)
        expired.wait(30)  # the first connect outlasts the try's time
        raise httpx.ConnectTimeout("timed out", request=request)

    class Recorded(Cutoff):
        def _expire(self) -> None:
            super()._expire()
            expired.set()

    addresses = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    metrics = WorkerMetrics(CollectorRegistry())
    sender = WebhookSender(metrics, Webhooks(["http://hook.test/t"], []), 1, outbox(),
        lambda: httpx.Client(transport=httpx.MockTransport(answer)),
        lambda url: destinations.Checked(addresses=addresses),
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("infermodes.queueing.notifications.Cutoff", Recorded)
        patch.setattr("infermodes.queueing.notifications.WEBHOOK_ANSWER_SECONDS", 0.2)
        sender.post({"inferenceId": "abc"}, True)
    assert tried == ["127.0.0.2"]
    assert metrics.notifications.labels("webhook", "failed")._value.get() == 1


def test_a_job_delivered_too_often_is_dead_lettered_named_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job whose senders were killed on each of its deliveries: the last delivery within
    either queue's limit dead-letters it (published to the dead letters, confirmed, then
    acked) with one line naming it, rather than POST it once more (what killed its senders
    may be in it) and leave the next loss to the queue; the one before is still POSTed."""
    sender, posted = webhooks([])
    body = {"inferenceId": "abc", "endpointName": "ep", "invocationStatus": "Completed"}
    last = OUTBOX_DELIVERY_LIMIT - 1  # deliveries before it: the embedded queue's last
    assert sender.handle(Delivery(webhook_job(body, True), last - 1)) is Settle.ACK
    assert len(posted) == 1 and written(sender).published == []
    assert sender.handle(Delivery(webhook_job(body, True), last)) is Settle.ACK
    assert len(posted) == 1
    assert written(sender).published == [(*DEAD_LETTERS, "abc", True)]
    assert written(sender).headers == [{"x-infermodes-reason": "unsettled",
        "x-infermodes-sends": 0, "x-infermodes-last-error": ""}]  # fmt: skip
    assert "webhook job of inference abc (endpoint ep, success)" in caplog.text
    assert "none settled" in caplog.text and "not sent: dead-lettered" in caplog.text
    assert sender.metrics.webhook_jobs_unsent.labels("dead_lettered")._value.get() == 1


def test_a_dead_letter_the_broker_did_not_confirm_is_requeued_not_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker down as the job is dead-lettered: the delivery is requeued (the job stays),
    and nothing says it was dead-lettered; the same for a job that cannot be put back."""
    sender, _ = webhooks([], Webhooks(["http://hook.test/ok"]))  # no error webhook
    sender.outbox = outbox(down=True)
    job = webhook_job({"inferenceId": "abc"}, True)
    assert sender.handle(Delivery(job, OUTBOX_UNSETTLED)) is Settle.REQUEUE
    assert sender.metrics.webhook_jobs_unsent.labels("dead_lettered")._value.get() == 0
    assert "not dead-lettered yet" in caplog.text
    young = {"inferenceId": "new", "eventTime": _iso(time.time())}
    sender.stopping.set()  # the pause ends at once
    assert sender.handle(Delivery(webhook_job(young, False), 0)) is Settle.REQUEUE
    assert "cannot put it back in the outbox" in caplog.text
    assert sender.metrics.webhook_jobs_returned.labels("no_webhook")._value.get() == 0


def test_a_failed_send_puts_the_job_back_counted_and_the_last_one_dead_letters_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A webhook that stays down: each send (its tries) puts the job back with one more send
    counted and the failure; the ``OUTBOX_SENDS``th dead-letters it, saying why, after how
    many sends and the last failure (scheme and host only), counted once confirmed."""
    monkeypatch.setattr("infermodes.queueing.notifications.WEBHOOK_BACKOFF_SECONDS", 0.0)
    sender, posted = webhooks([500] * 3 * OUTBOX_SENDS, Webhooks(["http://hook.test/t0ken"]))
    data = webhook_job({"inferenceId": "abc", "endpointName": "ep"}, True)
    for sends in range(1, OUTBOX_SENDS + 1):
        assert sender.handle(Delivery(data, 0)) is Settle.ACK
        data = written(sender).bodies[-1]
        assert read_webhook_job(data) == WebhookJob(
            {"inferenceId": "abc", "endpointName": "ep"},
            True,
            sends,
            "http://hook.test/... answered 500",
        )
    assert len(posted) == 3 * OUTBOX_SENDS
    # each put back for its next send after the delay of its count of sends, said in the log
    assert written(sender).delays == [5, 30, 120, 600, 600, 600, 600, 600, 0]
    assert (
        "send 3 of 9 failed (http://hook.test/... answered 500); back to the outbox, for "
        "the next send in 120 s" in caplog.text
    )
    returned = sender.metrics.webhook_jobs_returned.labels("send_failed")._value.get()
    assert returned == OUTBOX_SENDS - 1
    assert written(sender).published == [(*OUTBOX, "abc", True)] * (OUTBOX_SENDS - 1) + [
        (*DEAD_LETTERS, "abc", True)
    ]
    assert written(sender).headers[-1] == {"x-infermodes-reason": "sends_exhausted",
        "x-infermodes-sends": OUTBOX_SENDS,
        "x-infermodes-last-error": "http://hook.test/... answered 500"}  # fmt: skip
    assert f"{OUTBOX_SENDS} sends failed, the last: http://hook.test/... answered 500" in (
        caplog.text
    )
    assert "t0ken" not in caplog.text and b"t0ken" not in b"".join(written(sender).bodies)
    assert sender.metrics.webhook_jobs_unsent.labels("dead_lettered")._value.get() == 1


def test_a_later_send_skips_the_webhooks_that_took_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One of two webhooks down: the job goes back remembering the one that took it (by a
    digest, not its URL, which may hold a token), and the next sends POST only the other: a
    healthy webhook gets the notification once, not once per send."""
    monkeypatch.setattr("infermodes.queueing.notifications.WEBHOOK_BACKOFF_SECONDS", 0.0)
    posted: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(request.url.path)
        return httpx.Response(200 if request.url.path == "/good" else 500, stream=EMPTY)

    http = httpx.Client(transport=httpx.MockTransport(answer))
    hooks = Webhooks(["http://hook.test/good", "http://hook.test/bad"], [])
    metrics = WorkerMetrics(CollectorRegistry())
    sender = WebhookSender(metrics, hooks, 1, outbox(), lambda: http, check)
    data = webhook_job({"inferenceId": "abc"}, True)
    for _ in range(3):
        assert sender.handle(Delivery(data, 0)) is Settle.ACK
        data = written(sender).bodies[-1]
    assert posted == ["/good", "/bad", "/bad", "/bad"]
    job = read_webhook_job(data)
    assert job is not None and (job.sends, job.took) == (3, {webhook_key("http://hook.test/good")})
    assert b"/good" not in data and b"/bad" not in data
    assert metrics.notifications.labels("webhook", "sent")._value.get() == 1


def test_a_send_is_one_more_only_when_it_failed() -> None:
    """The pure decisions: the step before a POST, and the count after a failed one."""
    assert step_of(0, True, 1e9) is JobStep.SEND
    assert step_of(OUTBOX_UNSETTLED - 1, True, 0) is JobStep.SEND
    assert step_of(OUTBOX_UNSETTLED, True, 0) is JobStep.UNSETTLED
    assert step_of(OUTBOX_UNSETTLED, False, 0) is JobStep.UNSETTLED
    assert step_of(3, False, ORPHANED_JOB_SECONDS - 1) is JobStep.RETURN
    assert step_of(3, False, ORPHANED_JOB_SECONDS) is JobStep.ORPHANED
    job = WebhookJob({"inferenceId": "a"}, False, OUTBOX_SENDS - 2, "x answered 502")
    once, dead = failed_send(job, "x answered 503")
    assert (once.sends, once.last_error, dead) == (OUTBOX_SENDS - 1, "x answered 503", None)
    assert failed_send(once, "x failed: refused")[1] == "sends_exhausted"
    new = WebhookJob({"inferenceId": "a"}, False)
    assert failed_send(new, "x refused: link-local", refused=True)[1] == "refused"
    assert failed_send(new, "x answered 503")[1] is None
    assert read_webhook_job(once.encoded()) == once
    took, _ = failed_send(once, "x failed", frozenset({"k1"}))
    assert took.took == {"k1"} and read_webhook_job(took.encoded()) == took


def test_the_delay_before_a_job_s_next_send_grows_with_its_sends_then_stays() -> None:
    """5 s, 30 s, 2 min, then 10 min for each later send: the 8 waits before the last send
    span about 53 min."""
    assert [retry_delay(sends) for sends in range(1, OUTBOX_SENDS)] == [
        5, 30, 120, 600, 600, 600, 600, 600]  # fmt: skip
    assert sum(retry_delay(sends) for sends in range(1, OUTBOX_SENDS)) == 3155
    assert [retry_delay(sends, (2, 7)) for sends in (1, 2, 3, 40)] == [2, 7, 7, 7]
    assert retry_delay(1, (9,)) == 9


def test_a_refused_webhook_s_job_is_dead_lettered_at_once_with_its_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A webhook the worker refuses (a link-local address) can never be sent to: its job is
    dead-lettered after its first send, reason ``refused``, the refusal its last error, not
    put back to be refused 8 times more."""
    sender, posted = webhooks([], Webhooks(["http://169.254.169.254/t0ken"]))
    data = webhook_job({"inferenceId": "abc", "endpointName": "ep"}, True)
    assert sender.handle(Delivery(data, 0)) is Settle.ACK
    assert posted == []
    assert written(sender).published == [(*DEAD_LETTERS, "abc", True)]
    headers = written(sender).headers[-1]
    assert headers is not None and headers["x-infermodes-reason"] == "refused"
    assert headers["x-infermodes-sends"] == 1
    assert str(headers["x-infermodes-last-error"]).startswith(
        "http://169.254.169.254/... refused: "
    )
    assert "link-local or metadata" in str(headers["x-infermodes-last-error"])
    assert "refused, no send can succeed" in caplog.text and "t0ken" not in caplog.text
    assert sender.metrics.webhook_jobs_unsent.labels("dead_lettered")._value.get() == 1
    assert sender.metrics.webhook_jobs_returned.labels("send_failed")._value.get() == 0


def test_a_job_with_a_refused_webhook_beside_one_that_is_down_is_put_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The webhook that is down may come back: the job is put back for it (after its delay),
    not dead-lettered for the other's refusal."""
    monkeypatch.setattr("infermodes.queueing.notifications.WEBHOOK_BACKOFF_SECONDS", 0.0)
    hooks = Webhooks(["http://169.254.169.254/", "http://hook.test/down"])
    sender, posted = webhooks([503] * 3, hooks)
    assert sender.handle(Delivery(webhook_job({"inferenceId": "abc"}, True), 0)) is Settle.ACK
    assert len(posted) == 3
    assert written(sender).published == [(*OUTBOX, "abc", True)]
    assert written(sender).delays == [5]


@pytest.mark.parametrize("sends", ["1", -1, True, 1.5])
def test_a_job_whose_count_of_sends_is_no_count_is_no_job(sends: object) -> None:
    data = json.dumps({"success": True, "notification": {}, "sends": sends}).encode()
    assert read_webhook_job(data) is None


@pytest.mark.parametrize("took", ["k1", [1], {"k1": 1}])
def test_a_job_whose_webhooks_that_took_it_are_no_list_of_keys_is_no_job(took: object) -> None:
    data = json.dumps({"success": True, "notification": {}, "sends": 1, "took": took}).encode()
    assert read_webhook_job(data) is None


def test_a_young_job_of_an_outcome_without_webhook_here_goes_back_for_a_worker_with_one() -> None:
    """A rollout adding the error webhook: workers of the previous spec consume the jobs the
    new ones publish. They acked them unsent (lost); they leave them now, after a pause, until
    the job is older than any rollout (then its webhook was removed: acked, counted)."""
    stopping = threading.Event()
    stopping.set()  # the pause ends at once
    sender, posted = webhooks([], Webhooks(["http://hook.test/ok"], []))
    sender.stopping = stopping
    now = time.time()
    sender.clock = lambda: now
    fresh = {"inferenceId": "new", "endpointName": "ep", "eventTime": _iso(now - 5)}
    assert sender.handle(Delivery(webhook_job(fresh, False), 0)) is Settle.ACK  # put back
    assert written(sender).bodies == [webhook_job(fresh, False)]  # no send counted
    assert sender.metrics.webhook_jobs_unsent.labels("no_webhook")._value.get() == 0
    old = {**fresh, "eventTime": _iso(now - ORPHANED_JOB_SECONDS - 1)}
    assert sender.handle(Delivery(webhook_job(old, False), 0)) is Settle.ACK
    assert sender.metrics.webhook_jobs_unsent.labels("no_webhook")._value.get() == 1
    assert posted == []


def test_a_job_whose_outcome_has_no_webhook_now_is_acked_named_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The webhook was removed from the spec after the job was published: nothing to POST,
    so the job is acked (kept, it would wait for ever) with one line naming it."""
    sender, posted = webhooks([], Webhooks(["http://hook.test/ok"], []))
    body = {"inferenceId": "abc", "endpointName": "ep"}
    assert sender.handle(Delivery(webhook_job(body, False), 0)) is Settle.ACK
    assert posted == []
    assert "webhook job of inference abc (endpoint ep, error)" in caplog.text
    assert sender.metrics.webhook_jobs_unsent.labels("no_webhook")._value.get() == 1
