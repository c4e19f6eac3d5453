"""A real S3 API server on loopback (moto's server mode) for tests that use ``s3://``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.processes import free_port, wait_until


@dataclass(frozen=True)
class S3Endpoint:
    url: str

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and our storage) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> object:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )


@contextlib.contextmanager
def s3_server() -> Iterator[S3Endpoint]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Endpoint(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


def read_when_there(client: Any, uri: str, seconds: float = 90.0) -> bytes:
    """The object at ``s3://bucket/key`` once it exists (an async output is written after the
    invocation was accepted), read with the boto3 S3 ``client``."""
    from botocore.exceptions import ClientError

    bucket, key = uri.removeprefix("s3://").split("/", 1)
    found: list[bytes] = []

    def there() -> bool:
        try:
            found.append(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError:
            return False
        return True

    wait_until(there, seconds, f"{uri} to be written", interval=0.2)
    return found[0]


HOLD_SECONDS = 120.0  # a held read answers at the latest after this


@contextlib.contextmanager
def holding_s3_server(
    holds: Callable[[str], threading.Event | None],
) -> Iterator[S3Endpoint]:
    """``s3_server`` whose GETs wait for the event ``holds`` gives for their path (None: not
    held) before moto answers: a request reading such an input holds its invocation slot,
    however slow the machine (each of boto3's tries, 60 s each, is held again)."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)

    def holding(environ: dict[str, Any], start_response: Any) -> Any:
        event = holds(environ["PATH_INFO"]) if environ["REQUEST_METHOD"] == "GET" else None
        if event is not None:
            event.wait(HOLD_SECONDS)
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, holding, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield S3Endpoint(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        thread.join()
