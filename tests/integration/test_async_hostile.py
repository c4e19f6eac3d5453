"""What a hostile-but-ordinary user tried against the async data plane (issue 10), each with
real ``async-api`` and ``worker`` processes and the real broker: a re-used inference id,
symbolic links out of the allowed prefix, header values that are not ASCII digits or not
UTF-8, a CSV body declared libsvm, inline inputs and partial writes left behind, and
connections the broker drops."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from infermodes.predict import codecs
from infermodes.storage import Storage
from tests.conftest import AbaloneModel
from tests.support import recordio as recordio_samples
from tests.support.async_plane import (
    Notifications,
    Plane,
    plane,
    running_api,
    spawn_worker,
    to_csv,
)
from tests.support.processes import INFERMODES, free_port, stop_process, wait_until
from tests.support.rabbitmq import Broker

ID = "X-Amzn-SageMaker-Inference-Id"
LOCATION = "X-Amzn-SageMaker-InputLocation"
TTL = "X-Amzn-SageMaker-RequestTTLSeconds"
TIMEOUT = "X-Amzn-SageMaker-InvocationTimeoutSeconds"
ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
FAST_SWEEP = {"INFERMODES_ASYNC_API_SWEEP_INTERVAL_SECONDS": "0.3"}
HOUR = 3600.0


def model_uri(abalone_model: AbaloneModel) -> str:
    return f"file://{abalone_model.tarball}"


def scores(path: Path) -> np.ndarray:
    return np.array(path.read_text().split(), dtype=np.float32)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def post_together(
    live: Plane, requests: list[tuple[bytes, dict[str, str]]]
) -> list[httpx.Response]:
    """Send the requests at the same moment, each on its own connection."""
    barrier = threading.Barrier(len(requests))
    answers: list[httpx.Response | None] = [None] * len(requests)
    url = str(live.client.base_url)

    def send(index: int) -> None:
        body, headers = requests[index]
        with httpx.Client(base_url=url, timeout=30) as client:
            barrier.wait(30)
            answers[index] = client.post(
                f"/endpoints/{live.endpoint}/async-invocations",
                content=body,
                headers={"content-type": "text/csv", **headers},
            )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def test_an_inference_id_names_one_request_even_when_two_race_for_it(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    endpoint = "reuse"
    notes = Notifications(rabbitmq, endpoint).declare()
    rows = abalone_model.test_rows
    first, other = to_csv(rows[:3]), to_csv(rows[3:5])
    predicted = abalone_model.booster().inplace_predict(rows)
    expected = {first: predicted[:3], other: predicted[3:5]}
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        live.start_worker(model_uri(abalone_model), "w")
        done = live.invoke(first, {ID: "done"})
        assert live.invoke(b"1,2\n", {ID: "failed"}).status_code == 202  # 9 features: an error
        notes.wait_for({"done"}, "Completed", 60)
        notes.wait_for({"failed"}, "Failed", 60)
        again = live.invoke(first, {ID: "done"})
        assert (again.status_code, again.json()) == (202, done.json())
        for used, body in (("done", other), ("failed", first)):
            refused = live.invoke(body, {ID: used})
            assert refused.status_code == 409, refused.text
            assert (
                f"Inference-Id {used} was already used for a different request"
                in (refused.json()["message"])
            )
        races = {f"same-{n}": (first, first) for n in range(3)}
        races |= {f"different-{n}": (first, other) for n in range(3)}
        answers = post_together(
            live, [(body, {ID: name}) for name, pair in races.items() for body in pair]
        )
        winners: dict[str, bytes] = {}
        for index, (name, pair) in enumerate(races.items()):
            one, two = answers[2 * index], answers[2 * index + 1]
            if name.startswith("same"):
                assert (one.status_code, two.status_code) == (202, 202)
                assert one.json() == two.json()
                winners[name] = first
            else:
                assert sorted([one.status_code, two.status_code]) == [202, 409]
                winners[name] = pair[0] if one.status_code == 202 else pair[1]
        notes.wait_for(set(races), "Completed", 60)
    np.testing.assert_array_equal(scores(tmp_path / "output/done.out"), predicted[:3])
    for name, body in winners.items():
        np.testing.assert_array_equal(scores(tmp_path / f"output/{name}.out"), expected[body])
    assert names(tmp_path / "output") == sorted(f"{name}.out" for name in ["done", *races])
    assert names(tmp_path / "failure") == ["failed.error"]
    assert notes.ids("Completed")["done"] == 1  # the repeat was answered, not redone


def test_a_worker_reads_no_file_outside_the_allowed_prefix_whatever_the_links(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    endpoint = "links"
    notes = Notifications(rabbitmq, endpoint).declare()
    allowed, outside = tmp_path / "in", tmp_path / "outside"
    (allowed / "data").mkdir(parents=True)
    outside.mkdir()
    secret = to_csv(abalone_model.test_rows[:4])  # a valid input: read, it would be scored
    (outside / "secret.csv").write_bytes(secret)
    (allowed / "data/rows.csv").write_bytes(to_csv(abalone_model.test_rows[:2]))
    (allowed / "file-link.csv").symlink_to(outside / "secret.csv")
    (allowed / "folder-link").symlink_to(outside)
    (allowed / "passwd").symlink_to("/etc/passwd")
    (allowed / "zero").symlink_to("/dev/zero")  # was InvalidInput ("a special file")
    (allowed / "latest.csv").symlink_to(allowed / "data/rows.csv")  # inside: fine
    (allowed / "swapped.csv").write_bytes(to_csv(abalone_model.test_rows[:2]))
    locations = {
        "file-link": allowed / "file-link.csv",
        "folder-link": allowed / "folder-link/secret.csv",
        "passwd": allowed / "passwd",
        "zero": allowed / "zero",
        "swapped": allowed / "swapped.csv",
        "inside": allowed / "latest.csv",
    }
    prefixes = (f"file://{allowed}",)
    with plane(
        rabbitmq, endpoint, f"file://{tmp_path}/store", tmp_path, allowed_input_prefixes=prefixes
    ) as live:
        for name, path in locations.items():
            response = live.invoke(headers={ID: name, LOCATION: f"file://{path}"})
            assert response.status_code == 202, response.text
        # accepted as a regular file, then swapped for a link before any worker opens it
        (allowed / "swap.tmp").symlink_to(outside / "secret.csv")
        os.replace(allowed / "swap.tmp", allowed / "swapped.csv")
        live.start_worker(model_uri(abalone_model), "w")
        refused = {"file-link", "folder-link", "passwd", "zero", "swapped"}
        notes.wait_for(refused, "Failed", 60)
        notes.wait_for({"inside"}, "Completed", 60)
    assert names(tmp_path / "store/output") == ["inside.out"]
    for name in refused:
        note = next(n for n in notes.received if n["inferenceId"] == name)
        assert note["failureReason"] == "InputNotAllowed", note
        assert f"is not under file://{allowed}" in str(note["failureMessage"])
    assert secret.decode()[:20] not in str(notes.received)
    assert "root:" not in str(notes.received)


@contextlib.contextmanager
def api_client(
    rabbitmq: Broker, endpoint: str, tmp_path: Path
) -> Iterator[tuple[Any, httpx.Client]]:
    """A running async API for one endpoint storing under ``tmp_path``, and a client of it."""
    with (
        running_api(rabbitmq, {endpoint: f"file://{tmp_path}"}, tmp_path / "api.log") as api,
        httpx.Client(base_url=api.url, timeout=30) as client,
    ):
        yield api, client


def test_header_values_that_are_not_ascii_digits_are_a_400_naming_the_header(
    rabbitmq: Broker, tmp_path: Path
) -> None:
    with api_client(rabbitmq, "digits", tmp_path) as (api, client):
        for header in (TTL, TIMEOUT):
            for value in (b"\xb2", "\u0661\u0662".encode(), b"+5"):  # superscript, Arabic-Indic
                response = client.post(
                    "/endpoints/digits/async-invocations",
                    content=b"1\n",
                    headers=[(header.encode(), value)],
                )
                assert response.status_code == 400, response.text
                assert header in response.json()["message"]
                # the keep-alive connection still serves the next request
                assert client.post("/endpoints/digits/async-invocations", content=b"1\n").is_success
        metrics = client.get("/metrics").text
    assert 'infermodes_async_requests_total{endpoint="digits",status_code="400"} 6.0' in metrics
    assert 'status_code="500"' not in metrics
    assert "Traceback" not in api.log


def test_a_header_of_one_value_given_twice_is_a_400_naming_it(
    rabbitmq: Broker, tmp_path: Path
) -> None:
    """Two Inference-Ids (or Content-Types) were answered as if the first were the only one."""
    with api_client(rabbitmq, "header-twice", tmp_path) as (_, client):
        for header, values in ((ID, (b"a", b"b")), ("Content-Type", (b"text/csv", b"text/csv"))):
            response = client.post("/endpoints/header-twice/async-invocations", content=b"1\n",
                                   headers=[(header.encode(), v) for v in values])  # fmt: skip
            assert response.status_code == 400, response.text
            assert f"{header.lower()} was given 2 times" in response.json()["message"].lower()
        accepts = [(b"Accept", b"application/x-other"), (b"Accept", b"text/csv")]  # one list
        response = client.post("/endpoints/header-twice/async-invocations", content=b"1\n",
                               headers=accepts)  # fmt: skip
        assert response.status_code == 202, response.text


def test_custom_attributes_reach_the_notification_as_sent_in_utf8(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    endpoint = "utf8"
    notes = Notifications(rabbitmq, endpoint).declare()
    attributes = "trace=é-ü-✓ 日本"
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        row = to_csv(abalone_model.test_rows[:1])
        sent = live.client.post(
            f"/endpoints/{endpoint}/async-invocations",
            content=row,
            headers=[(ID.encode(), b"utf8"), (ATTRIBUTES.encode(), attributes.encode())],
        )
        assert sent.status_code == 202, sent.text
        latin1 = live.client.post(
            f"/endpoints/{endpoint}/async-invocations",
            content=row,
            headers=[(ATTRIBUTES.encode(), "é".encode("latin-1"))],
        )
        assert latin1.status_code == 400
        assert f"{ATTRIBUTES} is not valid UTF-8" in latin1.json()["message"]
        live.start_worker(model_uri(abalone_model), "w")
        notes.wait_for({"utf8"}, "Completed", 60)
    [note] = notes.received
    assert note["requestParameters"]["customAttributes"] == attributes  # type: ignore[index]


def test_csv_declared_as_libsvm_ends_in_invalid_input(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The error says what could not be read to the caller; the worker's log says only which
    request failed and why, never a value of its body."""
    endpoint = "libsvm"
    notes = Notifications(rabbitmq, endpoint).declare()
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        headers = {ID: "csv", "content-type": "text/libsvm"}
        assert live.invoke(b"0 1:hunter2-secret\n", headers).status_code == 202
        worker = live.start_worker(model_uri(abalone_model), "w")
        notes.wait_for({"csv"}, "Failed", 60)
        log = worker.log
    [note] = notes.received
    assert note["failureReason"] == "InvalidInput", note
    assert "hunter2-secret" in json.dumps(note)  # the caller is told what could not be read
    assert names(tmp_path / "output") == []
    assert "inference csv failed: InvalidInput" in log
    assert "hunter2" not in log


def test_refused_and_answered_requests_leave_no_inline_input_and_the_sweep_takes_the_rest(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    endpoint = "orphans"
    row = to_csv(abalone_model.test_rows[:2])
    down = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"  # no broker there
    with (
        running_api(
            rabbitmq, {endpoint: f"file://{tmp_path}"}, tmp_path / "down.log", broker_url=down
        ) as api,
        httpx.Client(base_url=api.url, timeout=30) as client,
    ):
        for n in range(10):
            response = client.post(
                f"/endpoints/{endpoint}/async-invocations", content=row, headers={ID: f"r{n}"}
            )
            assert response.status_code == 503
    assert names(tmp_path / "input") == []  # refused: nothing left
    (tmp_path / "input").mkdir(exist_ok=True)
    planted = {
        "orphan.in": 9 * HOUR,  # an API killed between storing and queueing, long ago
        "old.request": 25 * HOUR,
        "old.result": 25 * HOUR,
        "recent.in": 60.0,  # might still be queued: kept
        "recent.request": 60.0,
        "recent.result": 60.0,
    }
    for name, age in planted.items():
        (tmp_path / "input" / name).write_bytes(b"x")
        os.utime(tmp_path / "input" / name, (os.path.getmtime(tmp_path) - age,) * 2)
    notes = Notifications(rabbitmq, endpoint).declare()
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env=FAST_SWEEP) as live:
        live.start_worker(model_uri(abalone_model), "w")
        ids = {f"r{n}" for n in range(10)}
        for inference_id in sorted(ids):
            assert live.invoke(row, {ID: inference_id}).status_code == 202
        notes.wait_for(ids, "Completed", 60)
        wait_until(lambda: "orphan.in" not in names(tmp_path / "input"), 30, "the retention sweep")
    kept = ["recent.in", "recent.request", "recent.result"]
    assert names(tmp_path / "input") == sorted(
        kept + [f"{i}{suffix}" for i in ids for suffix in (".request", ".result")]
    )


def test_a_partial_output_of_a_killed_worker_is_never_seen_and_is_swept(
    rabbitmq: Broker, abalone_model: AbaloneModel, big_input: Path, tmp_path: Path
) -> None:
    endpoint = "partial"
    notes = Notifications(rabbitmq, endpoint).declare()
    output = tmp_path / "output"
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env=FAST_SWEEP) as live:
        assert live.invoke(headers={ID: "big", LOCATION: f"file://{big_input}"}).is_success
        worker = live.start_worker(model_uri(abalone_model), "killed")

        def partials() -> list[Path]:
            return sorted(output.glob(".big.out.*.partial")) if output.is_dir() else []

        wait_until(lambda: bool(partials()), 60, "a partial output", interval=0.01)
        worker.proc.kill()
        worker.proc.wait(10)
        [partial] = partials()
        assert Storage().list(f"file://{output}/") == []  # readers see no output
        assert not Storage().exists(f"file://{output}/big.out")
        os.utime(partial, (partial.stat().st_mtime - 3 * HOUR,) * 2)
        wait_until(lambda: not partial.exists(), 30, "the sweep to remove the partial file")
        live.start_worker(model_uri(abalone_model), "next")
        notes.wait_for({"big"}, "Completed", 120)
    assert names(output) == ["big.out"]


def connections_of(broker: Broker, pid: int) -> list[str]:
    listing = httpx.get(
        f"http://127.0.0.1:{broker.management_port}/api/connections",
        auth=("guest", "guest"),
        timeout=10,
    ).json()
    return [
        c["name"]
        for c in listing
        if c.get("client_properties", {}).get("connection_name") == f"infermodes pid {pid}"
    ]


def close_connections(broker: Broker, pid: int, closed: set[str]) -> None:
    """Close a process's connections from the broker's side, as it does after missed
    heartbeats or for a node's maintenance. The management API lists connections a few
    seconds late, so ``closed`` remembers those closed before."""
    fresh: list[str] = []

    def listed() -> bool:
        fresh[:] = [name for name in connections_of(broker, pid) if name not in closed]
        return bool(fresh)

    wait_until(listed, 30, f"connections of pid {pid}", interval=0.5)
    for name in fresh:
        httpx.delete(
            f"http://127.0.0.1:{broker.management_port}/api/connections/{quote(name)}",
            auth=("guest", "guest"),
            headers={"X-Reason": "closed by the test"},
            timeout=10,
        )
    closed.update(fresh)


def test_idle_connections_live_dropped_ones_reopen_quietly_and_back_off_starts_again(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    endpoint = "reconnect"
    notes = Notifications(rabbitmq, endpoint).declare()
    row = to_csv(abalone_model.test_rows[:1])
    heartbeat = 2  # the broker drops a client silent for about two of these
    quick = f"{rabbitmq.amqp_url}?heartbeat={heartbeat}"
    ids: set[str] = set()

    def round_of_requests(name: str) -> None:
        for n in range(4):
            response = live.invoke(row, {ID: f"{name}-{n}"})
            assert response.status_code == 202, response.text
            ids.add(f"{name}-{n}")
        notes.wait_for(ids, "Completed", 60)

    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, broker_url=quick) as live:
        worker = live.start_worker(model_uri(abalone_model), "w")
        assert live.api is not None
        api = live.api.proc.pid
        round_of_requests("first")
        wait_until(lambda: bool(connections_of(rabbitmq, api)), 30, "listed", interval=0.5)
        opened = set(connections_of(rabbitmq, api))
        threading.Event().wait(3 * heartbeat + 1)  # idle past the broker's patience
        round_of_requests("after-idle")
        assert opened <= set(connections_of(rabbitmq, api))  # kept alive, not reopened
        closed: set[str] = set()
        back = "consuming infermodes.async.reconnect: broker reachable again"  # not the outbox's
        for outage in (1, 2):  # the broker drops everything of both processes, twice
            for pid in (api, worker.proc.pid):
                close_connections(rabbitmq, pid, closed)
            wait_until(
                lambda n=outage: worker.log.count(back) == n,
                60,
                "the worker to reconnect",
            )
            round_of_requests(f"outage-{outage}")
        api_log = live.api.log
    for log in (api_log, worker.log):
        assert "Traceback" not in log and " ERROR " not in log, log
    lost = [line for line in worker.log.splitlines() if "broker unreachable" in line]
    # one line an outage for each consumer, the work queue's and the outbox's
    assert len(lost) == 4 and all(line.endswith("reconnecting in 0.5 s") for line in lost), lost


def test_a_login_the_broker_refuses_exits_a_worker_with_5_and_is_named_by_the_api_503(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A container reads its broker URL at start: a worker that kept retrying a refused login
    would never see a mended Secret, so it gives up (code 5) for the kubelet to restart it."""
    password = "not-the-password-of-guest"
    wrong = rabbitmq.amqp_url.replace("guest:guest@", f"guest:{password}@")
    assert wrong != rabbitmq.amqp_url
    worker = spawn_worker(
        rabbitmq, "refused", model_uri(abalone_model), tmp_path / "w.log", broker_url=wrong
    )
    try:
        worker.proc.wait(timeout=90)
    finally:
        stop_process(worker.proc)
    assert worker.proc.returncode == 5, worker.log
    assert re.search(r"ERROR .*the broker refused every login for \d+ s", worker.log), worker.log
    assert "exiting, so that a restart reads the broker URL again" in worker.log
    assert password not in worker.log
    with (  # the accepting side answers 503 (it may mend), naming the login, not "unreachable"
        running_api(rabbitmq, {"refused": f"file://{tmp_path}"}, tmp_path / "api.log",
                    broker_url=wrong) as api,
        httpx.Client(base_url=api.url, timeout=30) as client,
    ):  # fmt: skip
        response = client.post("/endpoints/refused/async-invocations", content=b"1,2\n")
    assert response.status_code == 503, response.text
    message = response.json()["message"]
    assert "message broker closed the connection at login (a wrong user, password" in message
    assert password not in message and password not in api.log
    named = response.headers["x-amzn-requestid"]  # and its log line, for a ticket quoting it
    assert [line for line in api.log.splitlines() if named in line and "503" in line], api.log


def test_the_help_says_what_the_code_does() -> None:
    text = subprocess.run(
        [INFERMODES, "async-api", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "[default: anywhere]" not in text
    assert "file:// only under the endpoint's input prefix" in " ".join(text.split())


def first_attempt_failure(
    rabbitmq: Broker,
    abalone_model: AbaloneModel,
    tmp_path: Path,
    case: str,
    location: str,
    env_change: dict[str, str],
    allowed: tuple[str, ...] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request for an input in a real S3 server, ``rows.csv`` in bucket ``inputs``, read by
    a real worker: its Failed notification and its error record once it ended."""
    from tests.support.seaweedfs import seaweedfs_server

    endpoint = f"store-{case}"  # the session's broker is shared: a queue name of its own
    notes = Notifications(rabbitmq, endpoint).declare()
    with seaweedfs_server() as store:
        client: Any = store.client()
        client.create_bucket(Bucket="inputs")
        client.put_object(Bucket="inputs", Key="rows.csv", Body=to_csv(abalone_model.test_rows[:2]))
        env = {**store.env, **env_change}
        with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env, 3, allowed) as live:
            assert live.invoke(headers={ID: case, LOCATION: location}).status_code == 202
            live.start_worker(model_uri(abalone_model), "w")
            notes.wait_for({case}, "Failed", 60)
    [note] = notes.received
    return note, json.loads((tmp_path / "failure" / f"{case}.error").read_bytes())


def test_an_input_the_store_refuses_fails_at_once_not_after_every_attempt(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Credentials the S3 server does not take: no retry mends that, so the request ends on
    its first attempt, naming the refusal (it was retried until its attempts ran out)."""
    wrong = {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    note, record = first_attempt_failure(
        rabbitmq, abalone_model, tmp_path, "refused", "s3://inputs/rows.csv", wrong, None
    )
    assert note["failureReason"] == "StorageRefused", note
    assert "s3 refused access to s3://inputs/rows.csv" in str(note["failureMessage"])
    assert record["attempts"] == 1, record


def test_output_credentials_rotated_under_a_worker_keep_its_requests_for_a_restarted_one(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The storage Secret of an endpoint whose outputs go to S3 rotated, its old key revoked,
    under a running worker (a pod reads its Secret at start): its store refuses the worker.
    That is the worker's credentials, not the requests' fault: it holds them as storage that
    fails, and a worker restarted with the new key completes each one. They ended Failed
    (StorageRefused) within seconds, with no output and no error object."""
    from tests.support.seaweedfs import seaweedfs_server

    endpoint = "rotated-output-key"  # the session's broker is shared: a queue name of its own
    notes = Notifications(rabbitmq, endpoint).declare()
    with seaweedfs_server() as store:
        client: Any = store.client()
        client.create_bucket(Bucket="out")
        with plane(rabbitmq, endpoint, "s3://out/ep", tmp_path, dict(store.env), 3) as live:
            live.env = {**store.env, "AWS_SECRET_ACCESS_KEY": "revoked-by-the-rotation"}
            old = live.start_worker(model_uri(abalone_model), "old")
            rows = abalone_model.test_rows[:3]
            ids: set[str] = set()
            for row in rows:
                accepted = live.invoke(to_csv([row]))
                assert accepted.status_code == 202, accepted.text
                ids.add(accepted.json()["InferenceId"])
            held = lambda: old.log.count("storage fails") >= len(ids)  # noqa: E731
            wait_until(lambda: held() or bool(notes.drain()), 60, "the old worker's answer")
            assert notes.received == [], notes.received  # none ended for the worker's key
            stop_process(old.proc)
            live.env = dict(store.env)  # the rotated Secret, read by the restarted worker
            live.start_worker(model_uri(abalone_model), "new")
            notes.wait_for(ids, "Completed", 60)
    assert not notes.ids("Failed"), notes.received


def test_an_input_key_the_store_calls_invalid_fails_at_once_naming_it(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A key the S3 server will never take (SeaweedFS answers InvalidRequest to a '..'
    segment): the request ends on its first attempt, naming the location. Taken for a store
    outage, it held a worker's slot for the storage wait (5 minutes) at each of its attempts,
    and the caller heard nothing all that time."""
    anywhere = ()  # no allowed prefixes: an s3:// input may lie anywhere, as by default
    note, record = first_attempt_failure(
        rabbitmq, abalone_model, tmp_path, "dotted", "s3://inputs/x/../rows.csv", {}, anywhere
    )
    assert note["failureReason"] == "UnusableLocation", note
    message = str(note["failureMessage"])
    assert "s3 does not take the location s3://inputs/x/../rows.csv" in message, message
    assert record["attempts"] == 1, record


def test_a_storage_outage_is_waited_out_and_every_queued_request_completes_once(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The S3 server the inputs are in stops while 12 requests wait: a worker that requeued
    at each failure spent every request's attempts within a second (its back-off is 50 ms
    here) and ended them all AttemptsExhausted. It now holds them and tries again: once the
    server is back, each completes, once, on its first delivery."""
    from moto.server import ThreadedMotoServer

    from tests.support.s3 import S3Endpoint

    endpoint = "storage-outage"  # the session's broker is shared: a queue name of its own
    notes = Notifications(rabbitmq, endpoint).declare()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    store = S3Endpoint(f"http://127.0.0.1:{port}")
    client: Any = store.client()
    client.create_bucket(Bucket="outage")
    ids = {f"o{i}" for i in range(12)}
    for name in ids:
        client.put_object(Bucket="outage", Key=f"{name}.csv",
                          Body=to_csv(abalone_model.test_rows[:2]))  # fmt: skip
    try:
        with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, store.env, 3) as live:
            for name in sorted(ids):
                headers = {ID: name, LOCATION: f"s3://outage/{name}.csv"}
                assert live.invoke(headers=headers).status_code == 202
            server.stop()  # the store goes away with every request queued
            worker = live.start_worker(model_uri(abalone_model), "w", concurrency=4)
            met = lambda: "Could not connect" in worker.log  # noqa: E731
            wait_until(met, 60, "the worker to meet the outage")
            time.sleep(3)  # the outage lasts: more than every attempt's back-off (50 ms) took
            notes.drain()
            assert not notes.ids("Failed"), notes.received  # none given up meanwhile
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()  # the same objects: moto keeps them in this process
            notes.wait_for(ids, "Completed", 120)
    finally:
        server.stop()
    assert notes.ids("Completed") == dict.fromkeys(ids, 1)
    assert not notes.ids("Failed")
    assert sorted(p.name for p in (tmp_path / "output").iterdir()) == sorted(
        f"{name}.out" for name in ids
    )
    assert not (tmp_path / "failure").exists() or not list((tmp_path / "failure").iterdir())


def test_a_retry_that_comes_after_the_ttl_is_expired_naming_the_attempt(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The TTL bounds retries too (an inline input is kept only as long as a request can
    start: async_retention). A request whose first attempt met a store that was down, and
    whose retry came after its TTL (the back-off is longer than it here), ended "Expired: the
    request's TTL of 5 s passed", as if it had never started: the message now names the
    attempt that could not start and sends the caller to the workers' logs."""
    from tests.support.s3 import S3Endpoint

    endpoint = "started-then-ttl"  # the session's broker is shared: a queue name of its own
    notes = Notifications(rabbitmq, endpoint).declare()
    store = S3Endpoint(f"http://127.0.0.1:{free_port()}")  # no server there: reads fail
    env = {**store.env, "INFERMODES_WORKER_STORAGE_WAIT_SECONDS": "0",
           "INFERMODES_WORKER_RETRY_BACKOFF_SECONDS": "8"}  # fmt: skip
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env, 3) as live:
        worker = live.start_worker(model_uri(abalone_model), "w")
        headers = {ID: "started", LOCATION: "s3://ttl/rows.csv", TTL: "5"}
        assert live.invoke(headers=headers).status_code == 202
        notes.wait_for({"started"}, "Failed", 60)
    assert "attempt 1 failed" in worker.log  # the first delivery started within the TTL
    [note] = notes.received
    assert note["failureReason"] == "Expired", note
    message = str(note["failureMessage"])
    assert "TTL of 5 s passed before its attempt 2 could start" in message, message
    assert "workers' logs" in message, message


def test_outputs_and_error_objects_on_s3_carry_their_content_type(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A reader of the output (a browser, a pipeline, boto3's ``get_object``) learns its type
    from the object, as on the platform, where the output has the model's response type: the
    worker stored outputs and error records with none, so the store guessed (``text/plain``)."""
    from tests.support.seaweedfs import seaweedfs_server

    endpoint = "typed-outputs"  # the session's broker is shared: a queue name of its own
    notes = Notifications(rabbitmq, endpoint).declare()
    rows = to_csv(abalone_model.test_rows[:2])
    with seaweedfs_server() as store:
        client: Any = store.client()
        client.create_bucket(Bucket="typed")
        with plane(rabbitmq, endpoint, "s3://typed/ep", tmp_path, store.env, 3) as live:
            asked = {"json": codecs.JSON, "csv": codecs.CSV, "lines": codecs.JSONLINES}
            for name, accept in asked.items():
                assert live.invoke(rows, {ID: name, "Accept": accept}).status_code == 202
            assert live.invoke(rows, {ID: "bad", "content-type": "text/libsvm"}).status_code == 202
            live.start_worker(model_uri(abalone_model), "w")
            notes.wait_for(set(asked), "Completed", 60)
            notes.wait_for({"bad"}, "Failed", 60)
        for name, accept in asked.items():
            head = client.head_object(Bucket="typed", Key=f"ep/output/{name}.out")
            assert head["ContentType"] == accept, (name, head)
        error = client.head_object(Bucket="typed", Key="ep/failure/bad.error")
        assert error["ContentType"] == "application/json", error


def _json_rows(rows: np.ndarray) -> bytes:
    return json.dumps({"instances": rows.tolist()}).encode()


def _whole(encode: Callable[[np.ndarray], bytes]) -> Callable[[np.ndarray], tuple[bytes, bytes]]:
    """(an input of ~4.5 MB, one of 3 rows), encoded whole by ``encode``."""

    def inputs(rows: np.ndarray) -> tuple[bytes, bytes]:
        return encode(np.tile(rows, (4_500_000 // len(encode(rows)) + 1, 1))), encode(rows[:3])

    return inputs


def _csv_long_line(rows: np.ndarray) -> tuple[bytes, bytes]:
    """(3 CSV rows, the first's first value an 8 MB long zero; the 3 rows)."""
    small = "\n".join(",".join(str(value) for value in row) for row in rows[:3]).encode()
    return b"0." + b"0" * 8_000_000 + b"1" + small[small.index(b",") :], small


@pytest.mark.parametrize(
    ("name", "content_type", "inputs", "refusal"),
    [
        # ~36 bytes per byte: 2.8 MiB each
        ("JSON", codecs.JSON, _whole(_json_rows), "limited to {cap} bytes"),
        # decoded a chunk of whole lines at a time, a long line ~26: one up to 16 MiB was decoded
        ("CSV", codecs.CSV, _csv_long_line, "line 1 is longer than {cap} bytes"),
    ],
)
def test_an_input_decoded_beyond_what_the_workers_memory_holds_fails_and_it_goes_on(
    rabbitmq: Broker,
    abalone_model: AbaloneModel,
    tmp_path: Path,
    name: str,
    content_type: str,
    inputs: Callable[[np.ndarray], tuple[bytes, bytes]],
    refusal: str,
) -> None:
    """A JSON input (decoded whole by Python's parser, at up to 36 bytes of memory per
    byte), or a CSV line (decoded in a chunk, a long line at up to 26), at the worker's
    memory-derived cap's far side would have it OOM-killed with every request it holds, again
    at each redelivery: it fails at once, naming the cap."""
    endpoint = f"{name.lower()}-cap"
    memory = 200 << 20  # 2 slots: at most 200 MiB / (2 x the type's bytes per byte) each
    notes = Notifications(rabbitmq, endpoint).declare()
    rows = abalone_model.test_rows.astype(np.float32)
    big, small = inputs(rows)
    typed = {"content-type": content_type}
    env = {"INFERMODES_WORKER_MEMORY_BYTES": str(memory)}
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env) as live:
        worker = live.start_worker(model_uri(abalone_model), "w")
        assert live.invoke(big, {ID: "big", **typed}).status_code == 202
        notes.wait_for({"big"}, "Failed", 60)
        assert live.invoke(small, {ID: "small", **typed}).status_code == 202
        notes.wait_for({"small"}, "Completed", 60)
        assert worker.proc.poll() is None
        log = worker.log
    [cap] = re.findall(rf"{name} inputs capped at (\d+) bytes: memory {memory}, concurrency 2", log)
    assert int(cap) < len(big)
    [note] = [n for n in notes.received if n["invocationStatus"] == "Failed"]
    assert note["failureReason"] == "PayloadTooLarge", note
    assert refusal.format(cap=cap) in str(note["failureMessage"])
    assert "give the worker more memory" in str(note["failureMessage"])
    record = json.loads((tmp_path / "failure" / "big.error").read_bytes())
    assert (record["reason"], record["attempts"]) == ("PayloadTooLarge", 1)
    assert names(tmp_path / "failure") == ["big.error"]
    expected = abalone_model.booster().inplace_predict(rows[:3])
    np.testing.assert_allclose(scores(tmp_path / "output/small.out"), expected, rtol=1e-6)


def test_a_recordio_input_is_held_to_its_estimate_from_its_frames_not_its_narrowest_cost(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A RecordIO input is decoded whole by Python's reader: its length is capped at its cost
    per byte (logged at start), then its frames are counted and its estimate (frames x 16 +
    bytes x 6 + the matrix of the model's width, the model server's) held to the worker's
    memory per invocation slot. Dense rows 80% of the cap long, over the slot's memory at the
    narrowest frames' cost per byte, get their output; frames of 12 bytes as long as the cap,
    whose estimate is over it, fail at once naming the estimate of the frames counted (up to
    the first over it: "at least") and the memory, and the worker
    goes on (empty frames as long as the cap are over the values a request may decode, at the
    model's 10 features)."""
    endpoint = "recordio-estimate"
    memory = 256 << 20  # 2 slots: ~50 to ~100 MiB each, as the worker's own size goes
    notes = Notifications(rabbitmq, endpoint).declare()
    rows = abalone_model.test_rows.astype(np.float32)
    typed = {"content-type": codecs.RECORDIO}
    env = {"INFERMODES_WORKER_MEMORY_BYTES": str(memory)}
    cost = codecs.PYTHON_READ_COST[codecs.RECORDIO]
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env) as live:
        worker = live.start_worker(model_uri(abalone_model), "w")
        log = r"RecordIO inputs capped at (\d+) bytes: memory \d+, concurrency 2"
        [cap] = [int(found) for found in re.findall(log, worker.log)]
        narrow = recordio_samples.frame(b"\0" * 4) * (cap // 12)
        per_frame = len(recordio_samples.dense(rows)) / len(rows)
        tiled = np.tile(rows, (int(0.8 * cap / per_frame) // len(rows), 1))
        dense = recordio_samples.dense(tiled)
        assert live.invoke(narrow, {ID: "narrow", **typed}).status_code == 202
        assert live.invoke(dense, {ID: "dense", **typed}).status_code == 202
        notes.wait_for({"narrow"}, "Failed", 60)
        notes.wait_for({"dense"}, "Completed", 120)
        assert worker.proc.poll() is None
    [note] = [n for n in notes.received if n["invocationStatus"] == "Failed"]
    assert note["failureReason"] == "PayloadTooLarge", note
    message = str(note["failureMessage"])
    width = rows.shape[1]  # the matrix of the model's width counts too
    assert f"the {codecs.RECORDIO} body is {len(narrow)} bytes" in message, message
    [budget] = re.findall(r"one read may take up to (\d+) bytes of memory here", message)
    counted = recordio_samples.frames_over(int(budget), len(narrow), width)  # as far as needed
    estimate = cost.estimate(counted, len(narrow), width)
    assert f"at an estimated at least {estimate} bytes of memory" in message, message
    assert f"(at least {counted} rows x {cost.per_row} + " in message, message
    # the setting's point: the dense input is within the slot's memory by its estimate, and
    # beyond it at the narrowest frames' cost per byte, which a cap on length alone charges
    held = cost.estimate(len(tiled), len(dense), width)
    assert held <= int(budget) < cost.worst_per_byte * len(dense)
    record = json.loads((tmp_path / "failure" / "narrow.error").read_bytes())
    assert (record["reason"], record["attempts"]) == ("PayloadTooLarge", 1)
    assert names(tmp_path / "failure") == ["narrow.error"]
    expected = abalone_model.booster().inplace_predict(tiled)
    np.testing.assert_allclose(scores(tmp_path / "output/dense.out"), expected, rtol=1e-6)
