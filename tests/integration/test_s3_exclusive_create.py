"""``Storage.create`` on a real S3-compatible server is exclusive: of many copies racing to
create one key, exactly one wins. Async result claims and inference-id records rest on it, and
a server that ignored ``If-None-Match`` would answer 200 to every copy."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from infermodes.storage import S3Store, Storage
from tests.support.s3 import S3Endpoint

COPIES = 8
ROUNDS = 5


def test_of_copies_racing_to_create_a_key_exactly_one_wins(s3: S3Endpoint) -> None:
    client: Any = s3.client()
    client.create_bucket(Bucket="exclusive")
    storage = Storage(s3_store=S3Store(client))
    start = threading.Barrier(COPIES)

    def create(uri: str, copy: int) -> bool:
        start.wait(timeout=30)
        return storage.create(uri, f"copy {copy}".encode())

    with ThreadPoolExecutor(COPIES) as pool:
        for round_ in range(ROUNDS):
            uri = f"s3://exclusive/claims/{round_}.result"
            won = list(pool.map(lambda copy: create(uri, copy), range(COPIES)))  # noqa: B023
            assert won.count(True) == 1, won
            winner = won.index(True)
            assert storage.get_bytes(uri) == f"copy {winner}".encode()
            assert not storage.create(uri, b"late")  # and a create after the race loses too
