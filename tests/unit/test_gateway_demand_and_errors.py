"""The gateway's demand writes (the rules of endpoints/demand.py, on a fake clock), the error
mapping of replica answers, and the kubeconfig credentials."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from infermodes.endpoints.demand import (
    HEARTBEAT_SECONDS,
    WRITE_INTERVAL_SECONDS,
    Demand,
    GatewayDemand,
    annotation_key,
)
from infermodes.gateway.demand_writer import DemandSchedule, DemandWriter
from infermodes.gateway.errors import (
    ERROR_TYPE_HEADER,
    InternalDependencyException,
    ModelError,
    gateway_error_body,
)
from infermodes.gateway.kube import Credentials, KubeApi
from infermodes.gateway.proxy import checked_answer, is_invocation, original_message
from infermodes.gateway.table import Endpoint, Table
from infermodes.gateway.upstream import Answer


def test_schedule_writes_changes_at_most_once_per_interval() -> None:
    schedule = DemandSchedule()
    assert schedule.due((1, 0, 5.0), now=100.0)  # never written
    schedule.wrote((1, 0, 5.0), 100.0)
    assert not schedule.due((2, 0, 6.0), now=100.0 + WRITE_INTERVAL_SECONDS / 2)
    assert schedule.due((2, 0, 6.0), now=100.0 + WRITE_INTERVAL_SECONDS)


def test_the_first_held_request_is_written_at_once() -> None:
    schedule = DemandSchedule()
    schedule.wrote((0, 0, 5.0), 100.0)
    assert schedule.due((0, 1, 6.0), now=100.01, urgent=True)
    schedule.wrote((0, 1, 6.0), 100.01)
    assert not schedule.due((0, 1, 6.0), now=100.02, urgent=True)  # nothing new to say


def test_heartbeat_only_while_there_is_work() -> None:
    schedule = DemandSchedule()
    schedule.wrote((3, 0, 5.0), 100.0)
    assert not schedule.due((3, 0, 5.0), now=100.0 + HEARTBEAT_SECONDS - 1)
    assert schedule.due((3, 0, 5.0), now=100.0 + HEARTBEAT_SECONDS)
    schedule.wrote((0, 0, 7.0), 200.0)
    assert not schedule.due((0, 0, 7.0), now=200.0 + 10 * HEARTBEAT_SECONDS)


class FakeSink:
    def __init__(self) -> None:
        self.writes: list[tuple[str, str, GatewayDemand]] = []
        self.fail = False

    async def write(self, namespace: str, name: str, demand: GatewayDemand) -> None:
        if self.fail:
            raise OSError("API unreachable")
        self.writes.append((namespace, name, demand))


def serverless_table() -> Table:
    table = Table()
    spec = {"mode": "serverless", "model": {"uri": "file:///m"}, "serverless": {}}
    table.apply_endpoint({"metadata": {"name": "sl", "namespace": "ns"}, "spec": spec})
    spec = {"mode": "realtime", "model": {"uri": "file:///m"}, "realtime": {}}
    table.apply_endpoint({"metadata": {"name": "rt", "namespace": "ns"}, "spec": spec})
    return table


def test_writer_writes_serverless_demand_by_the_rules_and_retries_failures() -> None:
    async def scenario() -> None:
        table = serverless_table()
        sink = FakeSink()
        clock = [100.0]
        writer = DemandWriter(table, sink, "gw-0", monotonic=lambda: clock[0],
                              wall=lambda: 5000.0 + clock[0])  # fmt: skip
        endpoint = table.lookup("sl")
        await writer.write_due()
        assert [(ns, name) for ns, name, _ in sink.writes] == [("ns", "sl")]  # realtime: never
        endpoint.active, endpoint.held, endpoint.last_request_at = 1, 1, 5100.0
        clock[0] += 0.1
        await writer.write_due()
        assert len(sink.writes) == 1  # within the interval
        writer.cold_start(endpoint)
        await writer.write_due()
        demand = sink.writes[-1][2]
        assert (demand.gateway, demand.in_flight, demand.held, demand.at) == ("gw-0", 0, 1, 5100.1)
        endpoint.held = 0
        clock[0] += WRITE_INTERVAL_SECONDS
        sink.fail = True
        await writer.write_due()
        sink.fail = False
        await writer.write_due()  # the failed write is due still
        assert sink.writes[-1][2].in_flight == 1
        entry = {annotation_key("gw-0"): sink.writes[-1][2].to_annotation()}
        assert Demand.from_annotations(entry, now=5101.1).active == 1

    asyncio.run(scenario())


def test_a_deleted_endpoint_is_written_no_more_and_a_new_one_of_its_name_starts_afresh() -> None:
    async def scenario() -> None:
        table = serverless_table()
        sink = FakeSink()
        clock = [100.0]
        writer = DemandWriter(table, sink, "gw", monotonic=lambda: clock[0], wall=lambda: 9.0)
        await writer.write_due()
        table.lookup("sl").last_request_at = 8.0  # traffic just before the delete
        table.remove_endpoint("ns", "sl")
        clock[0] += WRITE_INTERVAL_SECONDS
        written = len(sink.writes)
        await writer.write_due()
        await writer.flush()
        assert len(sink.writes) == written  # nothing for an object that no longer exists
        assert ("ns", "sl") not in writer.schedules
        spec = {"mode": "serverless", "model": {"uri": "file:///m"}, "serverless": {}}
        table.apply_endpoint({"metadata": {"name": "sl", "namespace": "ns"}, "spec": spec})
        assert table.lookup("sl").last_request_at == 0.0
        await writer.write_due()
        assert sink.writes[-1][1] == "sl" and sink.writes[-1][2].last_request_at == 0.0

    asyncio.run(scenario())


def test_flush_writes_the_last_figures_inside_the_interval() -> None:
    async def scenario() -> None:
        table = serverless_table()
        sink = FakeSink()
        writer = DemandWriter(table, sink, "gw", monotonic=lambda: 1.0, wall=lambda: 9.0)
        await writer.write_due()
        table.lookup("sl").last_request_at = 8.0
        await writer.flush()
        assert sink.writes[-1][2].last_request_at == 8.0

    asyncio.run(scenario())


def test_a_burst_between_two_writes_is_reported_at_its_peak() -> None:
    """Short requests are mostly answered between two samples: the demand written is the most
    in flight since the last write, then what is in flight now."""

    async def scenario() -> None:
        table = serverless_table()
        sink = FakeSink()
        clock = [100.0]
        writer = DemandWriter(table, sink, "gw", monotonic=lambda: clock[0], wall=lambda: 9.0)
        endpoint = table.lookup("sl")
        await writer.write_due()
        endpoint.active = endpoint.peak_active = 4  # four at once, all answered before the write
        endpoint.active = 0
        clock[0] += WRITE_INTERVAL_SECONDS
        await writer.write_due()
        assert sink.writes[-1][2].in_flight == 4
        clock[0] += WRITE_INTERVAL_SECONDS
        await writer.write_due()
        assert sink.writes[-1][2].in_flight == 0

    asyncio.run(scenario())


def async_table(replicas: object = None) -> Table:
    """Serverless ``sl`` and async ``queued``, whose status says ``replicas`` workers."""
    table = serverless_table()
    spec = {"mode": "async", "model": {"uri": "file:///m"},
            "async": {"outputPath": "s3://b/q", "minReplicas": 0}}  # fmt: skip
    status = {} if replicas is None else {"replicas": replicas}
    table.apply_endpoint({"metadata": {"name": "queued", "namespace": "ns"}, "spec": spec,
                          "status": status})  # fmt: skip
    return table


def async_status(table: Table, replicas: int) -> None:
    """The operator wrote the async endpoint's status: ``replicas`` workers."""
    spec = {"mode": "async", "model": {"uri": "file:///m"},
            "async": {"outputPath": "s3://b/q", "minReplicas": 0}}  # fmt: skip
    table.apply_endpoint({"metadata": {"name": "queued", "namespace": "ns"}, "spec": spec,
                          "status": {"replicas": replicas}})  # fmt: skip


def test_a_request_accepted_for_an_async_pool_at_zero_is_pushed_once_each_time_it_is_at_zero(
) -> None:  # fmt: skip
    async def scenario() -> None:
        table = async_table(replicas=0)
        sink = FakeSink()
        clock = [100.0]
        writer = DemandWriter(table, sink, "gw", monotonic=lambda: clock[0],
                              wall=lambda: 5000.0 + clock[0])  # fmt: skip
        pushed = lambda: [d.last_request_at for _, name, d in sink.writes if name == "queued"]  # noqa: E731
        await writer.write_due()
        assert [name for _, name, _ in sink.writes] == ["sl"]  # nothing for async unasked
        writer.async_accepted("queued")
        writer.async_accepted("queued")  # a burst before the writer's round: one push
        await writer.write_due()
        assert pushed() == [5100.0]
        first = sink.writes[-1][2]
        assert (first.in_flight, first.held) == (0, 0)
        for _ in range(3):  # still at zero: the operator has the push, its own look the rest
            clock[0] += WRITE_INTERVAL_SECONDS
            writer.async_accepted("queued")
            await writer.write_due()
        await writer.flush()  # the gateway stops: async entries are pushes only
        assert pushed() == [5100.0]
        async_status(table, 1)  # workers came, and went after the cooldown
        writer.async_accepted("queued")
        await writer.write_due()
        assert pushed() == [5100.0]
        async_status(table, 0)
        clock[0] += 60
        writer.async_accepted("queued")
        await writer.write_due()
        assert pushed() == [5100.0, 5163.0]

    asyncio.run(scenario())


def test_a_failed_push_is_tried_again_at_the_next_round_not_at_each_request() -> None:
    async def scenario() -> None:
        table = async_table(replicas=0)
        sink = FakeSink()
        writer = DemandWriter(table, sink, "gw", monotonic=lambda: 1.0, wall=lambda: 9.0)
        sink.fail = True
        writer.async_accepted("queued")
        await writer.write_due()
        writer._wake.clear()  # as the writer's loop does before a round
        for _ in range(3):  # the API server fails fast: requests do not hurry the retry
            writer.async_accepted("queued")
        assert not writer._wake.is_set()
        sink.fail = False
        await writer.write_due()  # the writer's next round, a second later at most
        assert [name for _, name, _ in sink.writes].count("queued") == 1
        writer.async_accepted("queued")
        await writer.write_due()
        assert [name for _, name, _ in sink.writes].count("queued") == 1

    asyncio.run(scenario())


class SlowSink(FakeSink):
    """A sink whose writes wait until released: requests arrive while a push is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def write(self, namespace: str, name: str, demand: GatewayDemand) -> None:
        await self.release.wait()
        await super().write(namespace, name, demand)


@pytest.mark.parametrize("behind", [False, True], ids=["push-written", "push-behind-a-write"])
def test_requests_accepted_while_the_push_is_written_add_no_second_push(behind: bool) -> None:
    """The operator's status may arrive while the push is written or, when the push waits
    behind another endpoint's write, before it: either way one push, and one again at zero."""

    async def scenario() -> None:
        table = async_table(replicas=0)
        sink = SlowSink()
        writer = DemandWriter(table, sink, "gw", monotonic=lambda: 1.0, wall=lambda: 9.0)
        if not behind:
            table.remove_endpoint("ns", "sl")
        writer.async_accepted("queued")
        pushing = asyncio.create_task(writer.write_due())
        await asyncio.sleep(0)  # the push is being written
        for _ in range(5):
            writer.async_accepted("queued")
        async_status(table, 3)  # the operator's answer arrives before the write returns
        sink.release.set()
        await pushing
        await writer.write_due()
        assert [name for _, name, _ in sink.writes].count("queued") == (0 if behind else 1)
        async_status(table, 0)  # the pool went back to zero: its next request is pushed
        writer.async_accepted("queued")
        await writer.write_due()
        assert [name for _, name, _ in sink.writes].count("queued") == (1 if behind else 2)

    asyncio.run(scenario())


@pytest.mark.parametrize("replicas", [1, 3])
def test_a_request_accepted_for_an_async_pool_with_workers_writes_nothing(replicas: int) -> None:
    async def scenario() -> None:
        table = async_table(replicas)
        sink = FakeSink()
        writer = DemandWriter(table, sink, "gw", monotonic=lambda: 1.0, wall=lambda: 9.0)
        writer.async_accepted("queued")
        writer.async_accepted("missing")  # deleted since: nothing to wake
        await writer.write_due()
        assert [name for _, name, _ in sink.writes] == ["sl"]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("status", "workers"),
    [({}, 0), ({"replicas": 0}, 0), ({"replicas": 2}, 2), ({"replicas": "2"}, 0),
     ({"replicas": True}, 0), ({"replicas": -1}, 0), (None, 0)],
)  # fmt: skip
def test_the_table_reads_an_async_pool_s_workers_from_its_status(status: object,
                                                                 workers: int) -> None:  # fmt: skip
    table = async_table()
    spec = {"mode": "async", "model": {"uri": "file:///m"}, "async": {"outputPath": "s3://b/q"}}
    table.apply_endpoint({"metadata": {"name": "queued", "namespace": "ns"}, "spec": spec,
                          "status": status})  # fmt: skip
    view = table.lookup("queued").async_
    assert view is not None and view.workers == workers


def test_a_model_4xx_is_a_424_model_error_with_the_original_status_and_message() -> None:
    body = json.dumps({"error": "InvalidInput", "message": "row 1: expected 10 features, got 2"})
    with pytest.raises(ModelError) as raised:
        checked_answer(Endpoint("abalone", "ns"), Answer(400, [], body.encode()))
    assert raised.value.status_code == 424
    shown = json.loads(gateway_error_body(raised.value))
    assert shown["error"] == "ModelError"
    assert shown["OriginalStatusCode"] == 400
    assert shown["OriginalMessage"] == "row 1: expected 10 features, got 2"
    assert "row 1: expected 10 features" in shown["message"]


def test_a_model_5xx_is_a_502_and_a_2xx_passes_untouched() -> None:
    with pytest.raises(InternalDependencyException) as raised:
        checked_answer(Endpoint("abalone", "ns"), Answer(503, [], b"model is loading"))
    assert raised.value.status_code == 502
    assert json.loads(gateway_error_body(raised.value))["OriginalStatusCode"] == 503
    answer = Answer(200, [(b"content-type", b"text/csv")], b"9.5\n")
    assert checked_answer(Endpoint("abalone", "ns"), answer) is answer


def test_original_message_of_non_json_bodies_is_their_text_bounded() -> None:
    assert original_message(b"plain failure") == "plain failure"
    assert len(original_message(b"x" * 5000)) == 1000
    assert ERROR_TYPE_HEADER == b"x-amzn-errortype"


@pytest.mark.parametrize(
    ("path", "routed"),
    [("/endpoints/a/invocations", True), ("/endpoints/a/async-invocations", False),
     ("/endpoints//invocations", False), ("/endpoints/invocations", False), ("/metrics", False)],
)  # fmt: skip
def test_only_the_invocations_route_takes_the_fast_path(path: str, routed: bool) -> None:
    assert is_invocation(path) is routed


def test_kubeconfig_credentials_use_its_current_context(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret-token\n")
    config = {
        "current-context": "gw",
        "contexts": [{"name": "gw", "context": {"cluster": "c", "user": "u", "namespace": "ops"}}],
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"tokenFile": "token"}}],
    }  # fmt: skip
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))  # JSON is YAML
    credentials = Credentials.from_kubeconfig(path)
    assert credentials.server == "https://127.0.0.1:6443"
    assert credentials.namespace == "ops"
    assert credentials.verify is False
    assert credentials.token() == "secret-token"
    assert "secret-token" not in repr(credentials)


def test_a_client_key_given_as_kubeconfig_data_does_not_stay_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ssl loads a client certificate only from files: they were written to a temporary folder
    that stayed, one more copy of the private key per gateway start."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")])
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + day).sign(key, hashes.SHA256()))  # fmt: skip
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    user = {"client-certificate-data": base64.b64encode(cert.public_bytes(
                serialization.Encoding.PEM)).decode(),
            "client-key-data": base64.b64encode(key_pem).decode()}  # fmt: skip
    config = {
        "current-context": "gw",
        "contexts": [{"name": "gw", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user}],
    }  # fmt: skip
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    credentials = Credentials.from_kubeconfig(path)
    api = KubeApi(credentials)  # loads the pair into its TLS context
    assert list(scratch.iterdir()) == []
    assert b"PRIVATE KEY" not in repr(credentials).encode()
    asyncio.run(api.client.aclose())


def test_a_broken_kubeconfig_is_reported_without_quoting_its_secrets(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text('users:\n- name: u\n  user: {token: "supersecret\n')
    with pytest.raises(ValueError) as broken:
        Credentials.from_kubeconfig(path)
    assert "not valid YAML" in str(broken.value)
    assert "supersecret" not in str(broken.value)


def test_the_clusters_refusals_are_the_stores_refused_with_what_it_said() -> None:
    import httpx

    from infermodes.gateway.kube import KubeApiError
    from infermodes.gateway.platform_store import refusal
    from infermodes.platform.store import LimitExceeded, Refused

    said = 'inferencemodels.infermodes.dev "m" is forbidden: exceeded quota: no-models'
    quota = KubeApiError.of(httpx.Response(403, json={"kind": "Status", "message": said}))
    assert quota.message == said
    assert isinstance(refusal(quota, "create InferenceModel 'm'"), LimitExceeded)
    invalid = KubeApiError.of(httpx.Response(422, json={"message": "spec.x: Invalid value"}))
    refused = refusal(invalid, "create InferenceEndpoint 'e'")
    assert type(refused) is Refused
    assert str(refused) == (
        "the cluster refused to create InferenceEndpoint 'e': spec.x: Invalid value"
    )
    rbac = 'inferenceendpoints.infermodes.dev is forbidden: User "system:serviceaccount:ops:gw" '
    rbac += 'cannot create resource "inferenceendpoints" in API group "infermodes.dev"'
    own = KubeApiError.of(httpx.Response(403, json={"message": rbac}))
    assert refusal(own, "create") is own  # the gateway's own account: a failure, for its log
    failed = KubeApiError.of(httpx.Response(500, text="etcd unavailable"))
    assert refusal(failed, "create") is failed and failed.message == "etcd unavailable"


class ScriptedApiServer:
    """A loopback HTTP server answering as the Kubernetes API server does: each request gets
    the next (status, message) of ``script`` as a Status (the last one once the script ends;
    201 echoes the object sent)."""

    def __init__(self, script: list[tuple[int, str]]) -> None:
        import http.server
        import threading

        self.script, self.seen = list(script), 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                sent = self.rfile.read(length) if length else b"{}"
                status, message = owner.script[min(owner.seen, len(owner.script) - 1)]
                owner.seen += 1
                body = sent if status == 201 else json.dumps(
                    {"kind": "Status", "status": "Failure", "message": message, "code": status}
                ).encode()  # fmt: skip
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop answering (again: nothing happens)."""
        self.server.shutdown()
        self.server.server_close()


def test_a_transient_answer_of_the_api_server_is_a_retryable_error_boto3_retries() -> None:
    """A 429 from the Kubernetes API server (a CRD it just made answers "storage is
    (re)initializing" for a moment) made CreateModel answer 500 InternalFailure. Real boto3
    over real HTTP, the router served by uvicorn, the store's client talking to a loopback API
    server: a 429 is ThrottlingException, a 503 or no answer ServiceUnavailable (503), and
    boto3's retries get through once the API server answers."""
    import socket
    import threading

    import boto3
    import uvicorn
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from fastapi import FastAPI

    from infermodes.gateway.platform_store import KubePlatformStore
    from infermodes.http import uvicorn_options
    from infermodes.platform.router import create_router
    from infermodes.platform.translate import Defaults
    from tests.support.processes import wait_until

    kube = ScriptedApiServer([(429, "storage is (re)initializing")])
    credentials = Credentials(server=kube.url, verify=False, token=lambda: None)
    store = KubePlatformStore(KubeApi(credentials), "platform")
    app = FastAPI()
    app.include_router(create_router(store, Defaults()))
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options("warning")))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()

    def sagemaker(attempts: int) -> Any:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        return boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1",
                            aws_access_key_id="k", aws_secret_access_key="s",
                            config=Config(retries={"total_max_attempts": attempts,
                                                   "mode": "standard"}))  # fmt: skip

    def refused(attempts: int = 1) -> tuple[int, str, str]:
        with pytest.raises(ClientError) as raised:
            sagemaker(attempts).create_model(ModelName="abalone", PrimaryContainer=container)
        error = raised.value.response
        return (
            error["ResponseMetadata"]["HTTPStatusCode"],
            error["Error"]["Code"],
            str(error["Error"]["Message"]),
        )

    container = {"ModelDataUrl": "s3://b/model.tar.gz"}
    try:
        wait_until(lambda: server.started, 30, "the server")
        status, code, message = refused()
        assert (status, code) == (400, "ThrottlingException"), message
        assert "storage is (re)initializing" in message
        kube.script = [(503, "the server is currently unable to handle the request")]
        assert refused()[:2] == (503, "ServiceUnavailable")
        kube.script, kube.seen = [(429, "storage is (re)initializing"), (200, ""), (201, "")], 0
        sagemaker(attempts=3).create_model(ModelName="abalone", PrimaryContainer=container)
        assert kube.seen == 3  # the cap's list throttled; the retry's list and create
        kube.close()  # nothing answers: the API server unreachable
        assert refused()[:2] == (503, "ServiceUnavailable")
    finally:
        kube.close()
        server.should_exit = True
        thread.join(30)
        listener.close()


def test_the_kubernetes_store_makes_no_endpoint_of_a_name_served_from_another_namespace() -> None:
    """CreateEndpoint (and CreateTransformJob) made an endpoint in the platform namespace under
    the name of one the gateway served from another (kubectl-made), and from then on the
    gateway answered both 409: a platform access key took any endpoint off the gateway. The
    store refuses it before any write, naming the namespace; its own namespace's name is the
    API server's to refuse (409, as ever)."""
    from infermodes.gateway.platform_store import KubePlatformStore
    from infermodes.platform.store import ServedElsewhere

    kube = ScriptedApiServer([(201, "")])
    table = Table()
    for namespace in ("team", "platform", "team-b"):
        table.apply_endpoint({"metadata": {"name": "abalone", "namespace": namespace},
                              "spec": {"mode": "realtime"}})  # fmt: skip
    table.apply_endpoint({"metadata": {"name": "own", "namespace": "platform"}, "spec": {}})
    credentials = Credentials(server=kube.url, verify=False, token=lambda: None)
    store = KubePlatformStore(KubeApi(credentials), "platform", table)
    try:
        with pytest.raises(ServedElsewhere) as refused:
            asyncio.run(store.create_endpoint({"metadata": {"name": "Abalone"}, "spec": {}}))
        assert str(refused.value) == (
            "the name abalone is taken by an endpoint this gateway serves from namespaces team "
            "and team-b (it serves a name from one namespace only)"
        )
        assert kube.seen == 0  # nothing written
        for name in ("own", "new"):  # the platform namespace's, or no one's: the API server's
            asyncio.run(store.create_endpoint({"metadata": {"name": name}, "spec": {}}))
        assert kube.seen == 2
    finally:
        kube.close()
