"""Micro-batching in the real ``infermodes serve``: concurrent requests predicted in one call
answer exactly what each would have answered alone, byte for byte, whatever their input type,
Accept or row count, and a malformed neighbour fails only itself."""

from __future__ import annotations

import concurrent.futures
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AbaloneModel
from tests.support.processes import ServerProcess, running_server

ACCEPTS = ("text/csv", "application/json", "application/jsonlines", "*/*", None)


@dataclass(frozen=True)
class Call:
    body: bytes
    content_type: str
    accept: str | None
    rows: int  # 0: malformed, never predicted

    @property
    def headers(self) -> dict[str, str]:
        headers = {"content-type": self.content_type}
        if self.accept is not None:
            headers["accept"] = self.accept
        return headers


def encode(rows: np.ndarray, content_type: str) -> bytes:
    if content_type == "text/csv":
        return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()
    if content_type == "application/json":
        return json.dumps({"instances": rows.tolist()}).encode()
    return "\n".join(
        " ".join(f"{i}:{float(v)!r}" for i, v in enumerate(row)) for row in rows
    ).encode()


def calls(rows: np.ndarray) -> list[Call]:
    """Well-formed requests of 1 to 5 rows in every input type and Accept, and malformed
    ones between them (a bad number, a wrong feature count, broken JSON, an Accept the server
    cannot produce)."""
    out: list[Call] = []
    start = 0
    for index in range(24):
        count = 1 + index % 5
        chunk = rows[start : start + count]
        start += count
        content_type = ("text/csv", "application/json", "text/libsvm")[index % 3]
        out.append(Call(encode(chunk, content_type), content_type, ACCEPTS[index % 5], count))
    bad_number = encode(rows[:2], "text/csv").replace(b",", b",abc,", 1)
    out[3:3] = [Call(bad_number, "text/csv", None, 0)]
    out[9:9] = [Call(encode(rows[:1, :-1], "text/csv"), "text/csv", "application/json", 0)]
    out[15:15] = [Call(b'{"instances": [[1.0, ', "application/json", None, 0)]
    out[20:20] = [Call(encode(rows[:1], "text/csv"), "text/csv", "image/png", 0)]
    return out


def post(client: httpx.Client, call: Call) -> tuple[int, str, bytes]:
    response = client.post("/invocations", content=call.body, headers=call.headers)
    return response.status_code, response.headers["content-type"], response.content


def concurrently(server: ServerProcess, burst: list[Call]) -> list[tuple[int, str, bytes]]:
    """Every call on its own connection, released together."""
    barrier = threading.Barrier(len(burst))
    clients = [httpx.Client(base_url=server.url, timeout=30) for _ in burst]
    try:
        for client in clients:  # connect first, so the barrier releases requests, not handshakes
            assert client.get("/ping").status_code == 200

        def send(index: int) -> tuple[int, str, bytes]:
            barrier.wait(timeout=30)
            return post(clients[index], burst[index])

        with concurrent.futures.ThreadPoolExecutor(len(burst)) as pool:
            return list(pool.map(send, range(len(burst))))
    finally:
        for client in clients:
            client.close()


def predict_calls(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "infermodes_model_predict_duration_seconds_count":
                return sample.value
    raise AssertionError("no predict duration histogram in /metrics")


@pytest.fixture(scope="module")
def alone(
    abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Batching off: every request is predicted by itself."""
    log = tmp_path_factory.mktemp("alone") / "server.log"
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "1"]
    with running_server([*args, "--max-batch-rows", "1"], log) as process:
        yield process


def answers_alone(server: ServerProcess, burst: list[Call]) -> list[tuple[int, str, bytes]]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return [post(client, call) for call in burst]


def check_scores(abalone_model: AbaloneModel, rows: np.ndarray, answer: bytes) -> None:
    """The alone answers themselves are the booster's predictions, row by row."""
    expected = abalone_model.booster().inplace_predict(rows)  # type: ignore[attr-defined]
    text = answer.decode()
    if text.startswith('{"predictions"'):
        got = [p["score"] for p in json.loads(text)["predictions"]]
    else:  # CSV or jsonlines
        lines = text.splitlines()
        got = [json.loads(line)["score"] if "{" in line else float(line) for line in lines]
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), expected)


def test_a_full_batch_is_one_predict_call_and_every_answer_is_the_one_alone(
    alone: ServerProcess, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A long window and a row cap of exactly the burst's well-formed rows: the burst is one
    batch, deterministically (it flushes when full), whatever the scheduling."""
    burst = calls(abalone_model.test_rows)
    expected = answers_alone(alone, burst)
    start = 0
    for call, (status, _, answer) in zip(burst, expected, strict=True):
        if call.rows:
            assert status == 200, answer
            check_scores(abalone_model, abalone_model.test_rows[start : start + call.rows], answer)
            start += call.rows
        else:
            assert status in (400, 406), answer
    total = sum(call.rows for call in burst)
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "1"]
    batching = [*args, "--max-batch-rows", str(total), "--max-batch-wait-us", "1000000"]
    with running_server(batching, tmp_path / "server.log") as server:
        before = predict_calls(server)
        got = concurrently(server, burst)
        assert predict_calls(server) - before == 1
    assert got == expected


def test_concurrent_requests_without_a_window_answer_as_alone(
    alone: ServerProcess, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The default (no window): rounds of concurrent bursts against two workers."""
    rows = abalone_model.test_rows
    bursts = [calls(np.roll(rows, -7 * round_, axis=0)) for round_ in range(8)]
    expected = [answers_alone(alone, burst) for burst in bursts]
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "2"]
    with running_server(args, tmp_path / "server.log") as server:
        for burst, want in zip(bursts, expected, strict=True):
            assert concurrently(server, burst) == want
