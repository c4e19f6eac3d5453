"""A rotated broker password reaches the gateway and the operator without a restart: the chart
gives them the broker Secret as a mounted file (the kubelet rewrites it when the Secret
changes), which they read again at each new connection. Here the file is rewritten as the
kubelet does it (a rename), on a real RabbitMQ whose user gets a new password and whose
connections of that user are closed (as a broker restart would)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from infermodes.operator.signals.backlog import read_backlog
from infermodes.queueing.broker import OptionalUrlFile, UrlFile
from infermodes.queueing.rabbitmq import QueueReader, RequestPublisher, queue_name
from tests.support.gateway import running_gateway, static_endpoint
from tests.support.processes import wait_until
from tests.support.rabbitmq import Broker

USER = "rotating"
BEFORE, AFTER = "password-before-rotation", "password-after-rotation"


def management(broker: Broker, method: str, path: str, body: object = None) -> httpx.Response:
    response = httpx.request(
        method,
        f"http://127.0.0.1:{broker.management_port}/api/{path}",
        auth=("guest", "guest"),
        json=body,
        timeout=10.0,
    )
    response.raise_for_status()
    return response


def set_password(broker: Broker, password: str) -> None:
    """The user, with this password, may use the default vhost and read its queues' figures."""
    management(broker, "PUT", f"users/{USER}", {"password": password, "tags": "monitoring"})
    permissions = {"configure": ".*", "write": ".*", "read": ".*"}
    management(broker, "PUT", f"permissions/%2F/{USER}", permissions)


def close_connections(broker: Broker) -> int:
    """Close the user's connections the broker lists (its listing is sampled: may be none)."""
    listed = management(broker, "GET", "connections").json()
    names = [c["name"] for c in listed if c.get("user") == USER]
    for name in names:
        management(broker, "DELETE", f"connections/{quote(name, safe='')}")
    return len(names)


def amqp_url(broker: Broker, password: str) -> str:
    return f"amqp://{USER}:{password}@127.0.0.1:{broker.amqp_port}/%2F"


def write_as_the_kubelet_does(path: Path, text: str) -> None:
    staged = path.with_name(f".{path.name}.staged")
    staged.write_text(text + "\n")
    staged.replace(path)


@pytest.fixture
def url_file(rabbitmq: Broker, tmp_path: Path) -> Path:
    set_password(rabbitmq, BEFORE)
    path = tmp_path / "broker" / "url"
    path.parent.mkdir()
    write_as_the_kubelet_does(path, amqp_url(rabbitmq, BEFORE))
    return path


def test_the_gateway_accepts_again_once_the_file_holds_the_new_password_with_no_restart(
    rabbitmq: Broker, url_file: Path, tmp_path: Path
) -> None:
    endpoint = static_endpoint(
        "rotated", "async", [], outputPath=f"file://{tmp_path}/output", maxReplicas=1
    )
    env = {
        "INFERMODES_GATEWAY_BROKER_URL_FILE": str(url_file),
        "INFERMODES_GATEWAY_ASYNC_STORAGE_PREFIXES": json.dumps([f"file://{tmp_path}/"]),
    }
    with running_gateway([endpoint], tmp_path, env=env) as gateway:

        def invoke() -> httpx.Response:
            return httpx.post(
                f"{gateway.url}/endpoints/rotated/async-invocations",
                content=b"1,2,3\n",
                headers={"content-type": "text/csv"},
                timeout=30,
            )

        assert invoke().status_code == 202
        set_password(rabbitmq, AFTER)  # the open connection is not asked again ...
        wait_until(lambda: close_connections(rabbitmq) > 0, 15, "the gateway's connection")
        refused = invoke()  # ... a new one is, with the file's password, which is the old one
        assert refused.status_code == 503, refused.text
        assert "closed the connection at login" in refused.json()["message"]
        url_file.unlink()  # a file it cannot read: 503 too, naming the file
        missing = invoke()
        assert missing.status_code == 503, missing.text
        assert f"cannot read the URL from {url_file}" in missing.json()["message"]
        write_as_the_kubelet_does(url_file, amqp_url(rabbitmq, AFTER))
        accepted = invoke()
        assert accepted.status_code == 202, accepted.text
        assert gateway.proc.poll() is None  # the same process
        log = gateway.log
    assert BEFORE not in log and AFTER not in log, log
    reader = QueueReader(rabbitmq.amqp_url, 1)
    try:
        assert reader.read(queue_name("rotated")).ready == 2  # both accepted, nothing else
    finally:
        reader.close()


def test_the_operators_backlog_reads_follow_the_files(
    rabbitmq: Broker, url_file: Path, tmp_path: Path
) -> None:
    """The management URL's file is optional (the Secret's key may be absent): without it, the
    in-flight count is unknown (the workers are asked), with it the broker's; each file is read
    again at each connection or reading."""
    publisher = RequestPublisher(rabbitmq.amqp_url, {"rotated-look": 3})
    publisher.submit("rotated-look", "one", b"{}")
    publisher.close()
    management_file = tmp_path / "broker-management" / "url"
    broker_url, management_url = UrlFile(url_file), OptionalUrlFile(management_file)
    reader = QueueReader(broker_url, 1)

    def look() -> tuple[int | None, int | None] | None:
        figures = read_backlog("rotated-look", broker_url, management_url, reader)
        return None if figures is None else (figures.ready, figures.in_flight)

    def management_at(password: str) -> None:
        url = f"http://{USER}:{password}@127.0.0.1:{rabbitmq.management_port}"
        write_as_the_kubelet_does(management_file, url)

    try:
        assert look() == (1, None)  # no management API: in flight unknown
        management_file.parent.mkdir()
        management_at(BEFORE)
        assert look() == (1, 0)
        set_password(rabbitmq, AFTER)
        wait_until(lambda: close_connections(rabbitmq) > 0, 15, "the reader's connection")
        assert look() is None  # unreadable: the scaler keeps the replicas
        write_as_the_kubelet_does(url_file, amqp_url(rabbitmq, AFTER))
        assert look() == (1, None)  # the management file still holds the old password
        management_at(AFTER)
        assert look() == (1, 0)
    finally:
        reader.close()
