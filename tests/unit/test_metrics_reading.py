"""Reading many processes' metrics (``metrics.read_all``): all at once, and never longer than
the deadline; and serving them, with a readiness path beside them."""

import socket
import threading

import httpx
from prometheus_client import CollectorRegistry, Gauge

from infermodes.metrics import fetch_metrics_text, probe_ready, read_all, serve_metrics


def test_every_pod_is_read_at_the_same_time() -> None:
    """Each read waits for all the others to have started: read one after another, the
    barrier would break and every answer would be None."""
    ips = [f"127.0.0.{n}" for n in range(1, 11)]
    barrier = threading.Barrier(len(ips), timeout=10)

    def read(ip: str) -> str:
        barrier.wait()
        return f"{ip}:9090"

    assert read_all(read, ips, deadline=30) == {ip: f"{ip}:9090" for ip in ips}


def test_a_pod_that_does_not_answer_in_time_is_unknown_and_the_others_are_kept() -> None:
    released = threading.Event()

    def read(ip: str) -> str | None:
        if ip == "127.0.0.2":
            released.wait(30)  # a port whose packets are dropped
            return "too late"
        return None if ip == "127.0.0.3" else "answer"

    try:
        found = read_all(read, ["127.0.0.1", "127.0.0.2", "127.0.0.3"], deadline=3)
    finally:
        released.set()
    assert found == {"127.0.0.1": "answer", "127.0.0.2": None, "127.0.0.3": None}


def test_a_read_that_raises_is_unknown_and_no_pods_read_nothing() -> None:
    reads = []

    def read(ip: str) -> str:
        reads.append(ip)
        raise ValueError("not the exposition format")

    assert read_all(read, ["127.0.0.1", "127.0.0.1"]) == {"127.0.0.1": None}
    assert reads == ["127.0.0.1"]  # a key given twice is read once
    assert read_all(read, []) == {}


def test_the_readiness_path_answers_as_its_check_says_and_every_other_path_is_metrics() -> None:
    registry = CollectorRegistry()
    Gauge("infermodes_probe_sample", "A sample to find.", registry=registry).set(3)
    consuming = threading.Event()
    server = serve_metrics(0, "127.0.0.1", registry, consuming.is_set)
    plain = serve_metrics(0, "127.0.0.1", registry)  # no check: /readyz is the metrics too
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 503
        assert not probe_ready("127.0.0.1", server.server_port)
        consuming.set()
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        assert probe_ready("127.0.0.1", server.server_port)
        head = httpx.head(f"{url}/readyz", timeout=5)
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == str(len(b"ready\n"))  # GET's headers
        posted = httpx.post(f"{url}/readyz", timeout=5)
        assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
        assert "POST" in posted.text
        consuming.clear()
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 503
        assert "infermodes_probe_sample 3.0" in httpx.get(f"{url}/metrics", timeout=5).text
        text = fetch_metrics_text("127.0.0.1", plain.server_port)
        assert text is not None and "infermodes_probe_sample 3.0" in text
        assert (
            "infermodes_probe_sample"
            in httpx.get(f"http://127.0.0.1:{plain.server_port}/readyz", timeout=5).text
        )
    finally:
        for running in (server, plain):
            running.shutdown()
            running.server_close()


def test_a_port_nobody_serves_is_not_ready() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: the connection is refused
        assert not probe_ready("127.0.0.1", port, timeout=2)
