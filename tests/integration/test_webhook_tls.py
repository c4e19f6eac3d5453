"""An HTTPS webhook, for real: the worker connects to the address it checked (not to what a
second lookup answers) and still verifies the receiver's certificate against the name."""

from __future__ import annotations

import datetime
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from infermodes import destinations
from infermodes.metrics import WorkerMetrics
from infermodes.queueing.notifications import Webhooks, WebhookSender
from tests.unit.test_async_notifications import outbox


def certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and its key, as files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pkcs8 = serialization.PrivateFormat.PKCS8
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[int, Path, list[tuple[str, str]]]]:
    """An HTTPS receiver on 127.0.0.1 alone with a certificate for localhost: its port, the
    certificate, and (SNI name, Host) of each POST."""
    cert, key = certificate(tmp_path, "localhost")
    received: list[tuple[str, str]] = []
    names: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # connections kept, as real receivers keep them

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            received.append((names[-1], self.headers["host"]))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _socket, name, _context: names.append(name or "")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], cert, received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_an_https_webhook_by_name_reaches_the_checked_address_with_its_certificate_verified(
    receiver: tuple[int, Path, list[tuple[str, str]]],
) -> None:
    """``localhost`` looked up by the worker (::1 may come first: the receiver listens on
    127.0.0.1 alone, so the next address is tried): the name goes in the TLS handshake and
    in Host, so the certificate for localhost is verified although the connection goes to an
    address; another name at the same address does not ride on that verified connection."""
    port, cert, received = receiver

    def trusting() -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=5)

    def resolved(url: str) -> destinations.Checked:  # other.test: this machine too
        return destinations.check(url, lambda host: ["127.0.0.1"] if host == "other.test"
                                  else destinations.resolve(host))  # fmt: skip

    metrics = WorkerMetrics(CollectorRegistry())
    success = [f"https://localhost:{port}/hook", f"https://other.test:{port}/hook"]
    hooks = Webhooks(success, [f"https://127.0.0.1:{port}/hook"])
    sender = WebhookSender(metrics, hooks, 1, outbox(), trusting, resolved)
    sender.post({"inferenceId": "a"}, True)
    # other.test reaches the same address, but not over localhost's verified connection: its
    # own handshake names it, and the certificate (for localhost) is refused
    assert received == [("localhost", f"localhost:{port}")]
    sender.post({"inferenceId": "b"}, False)  # an address: no name to verify
    assert len(received) == 1
    assert metrics.notifications.labels("webhook", "sent")._value.get() == 1
    assert metrics.notifications.labels("webhook", "failed")._value.get() == 2
