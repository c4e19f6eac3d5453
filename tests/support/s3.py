"""A real S3 API server on loopback (moto's server mode) for tests that use ``s3://``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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
