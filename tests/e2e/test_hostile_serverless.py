"""Serverless and realtime endpoints on the test control plane, used the way a careless or
hostile caller would: cold starts with more callers than maxConcurrency, requests racing the
scale to zero, spec edits and deletes under traffic, a model that cannot load, bad bodies, and
replica bounds changed under traffic. Every request is counted: each one gets an answer, and
every prediction equals the booster's."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import AbaloneModel
from tests.e2e.operator_support import (
    Tools,
    endpoint_manifest,
    gateway_url,
    get_endpoint,
    model_copy,
    ready_pod_ips,
    to_csv,
    wait_phase,
)
from tests.e2e.test_serverless import replicas_of, serverless_manifest
from tests.support.processes import wait_until

CSV = {"content-type": "text/csv"}


@dataclass
class Ledger:
    """Every request sent and what it got: (status, error type, body) or the exception."""

    expected: Callable[[np.ndarray], np.ndarray]
    rows: np.ndarray
    answers: list[tuple[int, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, url: str, name: str, start: int, count: int = 20) -> int:
        """One invocation of ``count`` rows from ``start``; its status (-1: no answer)."""
        part = self.rows[start % len(self.rows) :][:count]
        try:
            response = httpx.post(f"{url}/endpoints/{name}/invocations", content=to_csv(part),
                                  headers=CSV, timeout=120)  # fmt: skip
        except httpx.HTTPError as exc:
            with self.lock:
                self.answers.append((-1, type(exc).__name__, str(exc)))
            return -1
        kind = response.headers.get("x-amzn-errortype", "")
        with self.lock:
            self.answers.append((response.status_code, kind, response.text))
        if response.status_code == 200:
            got = np.array(response.text.split(), dtype=np.float32)
            np.testing.assert_array_equal(got, self.expected(part))
        return response.status_code

    def codes(self) -> dict[int, int]:
        with self.lock:
            found = [a[0] for a in self.answers]
        return {code: found.count(code) for code in sorted(set(found))}

    def not_in(self, allowed: set[int]) -> list[tuple[int, str, str]]:
        with self.lock:
            return [a for a in self.answers if a[0] not in allowed]


@pytest.fixture
def ledger(abalone_model: AbaloneModel) -> Ledger:
    booster: Any = abalone_model.booster()
    return Ledger(lambda rows: booster.inplace_predict(rows), abalone_model.test_rows)


@dataclass
class Traffic:
    """Clients calling in a loop until stopped (each bounded in time)."""

    ledger: Ledger
    url: str
    name: str
    clients: int
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)

    def start(self) -> Traffic:
        def client(index: int) -> None:
            deadline = time.monotonic() + 400
            sent = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    self.ledger.call(self.url, self.name, index * 97 + sent * 13)
                except AssertionError as exc:  # a wrong prediction
                    self.failures.append(exc)
                sent += 1

        self.threads = [threading.Thread(target=client, args=(i,)) for i in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=150)
        assert not any(t.is_alive() for t in self.threads), "a client never got its answer"
        assert not self.failures, self.failures[:3]


@contextlib.contextmanager
def traffic(ledger: Ledger, url: str, name: str, clients: int) -> Iterator[Traffic]:
    running = Traffic(ledger, url, name, clients).start()
    try:
        yield running
    finally:
        running.finish()


def apply_ok(tools: Tools, manifest: dict[str, Any], namespace: str) -> None:
    applied = tools.apply(manifest, namespace)
    assert applied.returncode == 0, applied.stderr


def settled(tools: Tools, namespace: str, name: str, phase: str = "InService",
            timeout: float = 180) -> dict[str, Any]:  # fmt: skip
    """The endpoint in ``phase`` for its current generation."""
    return wait_phase(tools.cluster.api, namespace, name, phase, timeout, also=lambda e: (
        e["status"].get("observedGeneration") == e["metadata"]["generation"]))  # fmt: skip


def url_of(tools: Tools) -> str:
    url = gateway_url(tools)
    assert url is not None
    return url


def served_by_gateway(url: str, name: str) -> None:
    """Waits for the gateway to serve a new endpoint: its table follows the status through its
    watch a moment after the status says InService; until then it answers that the endpoint is
    Creating (LoadingModel), as it was while one replica loaded its model."""
    invoke = f"{url}/endpoints/{name}/invocations"

    def served() -> bool:
        return httpx.post(invoke, content=ROW, headers=CSV, timeout=90).status_code == 200

    wait_until(served, 30, f"the gateway to serve {name}")


def burst(ledger: Ledger, url: str, name: str, callers: int) -> list[int]:
    """``callers`` invocations at once; their statuses."""
    gate = threading.Barrier(callers)

    def one(index: int) -> int:
        gate.wait(timeout=30)
        return ledger.call(url, name, index * 31)

    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(one, range(callers)))


def test_a_cold_start_burst_past_max_concurrency_is_served_or_throttled_never_lost(
    tools: Tools, k8s_namespace: str, model_uri: str, ledger: Ledger
) -> None:
    """Twelve callers at once on an endpoint at zero with maxConcurrency 3: three are held and
    served, the rest get 429 ThrottlingException at once; nothing is a 5xx, nothing unanswered.
    The same burst once warm."""
    manifest = serverless_manifest("burst", model_uri, maxConcurrency=3,
                                   concurrencyPerReplica=1, idleTimeoutSeconds=600)  # fmt: skip
    apply_ok(tools, manifest, k8s_namespace)
    settled(tools, k8s_namespace, "burst")
    # its model loaded by one replica, which no request asked for: gone at once
    wait_until(lambda: replicas_of(tools, k8s_namespace, "burst") == 0, 90, "zero replicas")
    url = url_of(tools)
    for wave in ("cold", "warm"):
        codes = burst(ledger, url, "burst", 12)
        assert set(codes) <= {200, 429}, (wave, ledger.not_in({200, 429})[:3])
        assert codes.count(200) >= 3, (wave, codes)
        throttled = [a for a in ledger.answers if a[0] == 429]
        assert all(kind == "ThrottlingException" for _, kind, _ in throttled), throttled[:2]
    assert -1 not in ledger.codes()


def test_requests_racing_the_scale_to_zero_are_all_served(
    tools: Tools, k8s_namespace: str, model_uri: str, ledger: Ledger
) -> None:
    """idleTimeoutSeconds 10: requests sent around the moment the operator decides zero (after
    the timeout and 2 s), and at once as the Deployment goes to zero (its pod stopping): every
    one is served, by the stopping replica or a new one."""
    manifest = serverless_manifest("idle", model_uri, maxConcurrency=4, concurrencyPerReplica=1,
                                   idleTimeoutSeconds=10)  # fmt: skip
    apply_ok(tools, manifest, k8s_namespace)
    settled(tools, k8s_namespace, "idle")
    url = url_of(tools)
    served_by_gateway(url, "idle")
    assert ledger.call(url, "idle", 0) == 200
    for pause in (11.0, 11.6, 12.0, 12.4, 13.0):  # around the decision at 10 + 2 s
        time.sleep(pause)
        assert ledger.call(url, "idle", int(pause * 10)) == 200, ledger.answers[-1]
    for cycle in range(3):  # the Deployment at zero, its pod still stopping: a burst at once
        wait_until(lambda: replicas_of(tools, k8s_namespace, "idle") == 0, 90,
                   "the scale to zero", interval=0.05)  # fmt: skip
        codes = burst(ledger, url, "idle", 4)
        assert codes == [200] * 4, (cycle, ledger.not_in({200})[:3])
    assert ledger.codes() == {200: len(ledger.answers)}


def more_answers(ledger: Ledger, count: int, what: str) -> None:
    seen = len(ledger.answers)
    wait_until(lambda: len(ledger.answers) >= seen + count, 120, f"{count} answers {what}")


def test_spec_edits_under_traffic_lose_no_request(
    tools: Tools, k8s_namespace: str, model_uri: str, ledger: Ledger,
    abalone_model: AbaloneModel, tmp_path: Path,
) -> None:  # fmt: skip
    """Two clients call without pause while the spec changes: the idle timeout, maxConcurrency,
    the model (another copy: a rollout), a model that cannot load (the warm replica keeps
    serving, the endpoint Updating with the reason), and back. Every request is a 200. (Not
    memory: the test node's two CPUs cannot hold the rollout's second replica of 1 CPU beside
    the first, the operator and the gateway; the endpoint says Unschedulable.)"""
    api = tools.cluster.api
    other = model_copy(abalone_model.tarball, tmp_path / "other")
    fields: dict[str, Any] = {"maxConcurrency": 10, "concurrencyPerReplica": 5,
                              "idleTimeoutSeconds": 600, "memorySizeInMB": 1024}  # fmt: skip
    apply_ok(tools, serverless_manifest("edits", model_uri, **fields), k8s_namespace)
    settled(tools, k8s_namespace, "edits")
    with traffic(ledger, url_of(tools), "edits", 2):
        more_answers(ledger, 5, "before the edits")
        for change in ({"idleTimeoutSeconds": 900}, {"maxConcurrency": 3}):
            fields |= change
            apply_ok(tools, serverless_manifest("edits", model_uri, **fields), k8s_namespace)
            settled(tools, k8s_namespace, "edits")
            more_answers(ledger, 10, f"after {change}")
        apply_ok(tools, serverless_manifest("edits", other, **fields), k8s_namespace)
        settled(tools, k8s_namespace, "edits")
        more_answers(ledger, 10, "on the other copy")
        lost = f"file:///nonexistent/{k8s_namespace}/model.tar.gz"
        apply_ok(tools, serverless_manifest("edits", lost, **fields), k8s_namespace)
        blocked = wait_phase(api, k8s_namespace, "edits", "Updating", also=lambda e: (
            e["status"].get("reason") == "ModelLoadFailed"
            and e["status"].get("observedGeneration") == e["metadata"]["generation"]))  # fmt: skip
        assert "of the previous spec still serve" in blocked["status"]["message"], blocked
        more_answers(ledger, 10, "while the update cannot roll out")
        endpoint = get_endpoint(api, k8s_namespace, "edits") or {}
        assert endpoint["status"]["phase"] == "Updating", endpoint["status"]
        apply_ok(tools, serverless_manifest("edits", other, **fields), k8s_namespace)
        settled(tools, k8s_namespace, "edits")
        more_answers(ledger, 10, "after the revert")
    assert ledger.codes() == {200: len(ledger.answers)}, ledger.not_in({200})[:3]


def test_delete_under_traffic_answers_every_request_200_or_404(
    tools: Tools, k8s_namespace: str, model_uri: str, ledger: Ledger
) -> None:
    """Three clients call while the endpoint is deleted: what was in flight is served, what
    comes after is told 404 (not a 5xx, not a hold that runs out)."""
    manifest = serverless_manifest("doomed", model_uri, maxConcurrency=6,
                                   concurrencyPerReplica=2, idleTimeoutSeconds=600)  # fmt: skip
    apply_ok(tools, manifest, k8s_namespace)
    settled(tools, k8s_namespace, "doomed")
    url = url_of(tools)
    with traffic(ledger, url, "doomed", 3):
        more_answers(ledger, 20, "before the delete")
        deleted = tools.kubectl("delete", "ie", "doomed", "-n", k8s_namespace, "--wait=false")
        assert deleted.returncode == 0, deleted.stderr

        def refused_since() -> bool:
            with ledger.lock:
                return [a[0] for a in ledger.answers[-6:]] == [404] * 6

        wait_until(refused_since, 150, "six 404s in a row after the delete")
    assert set(ledger.codes()) <= {200, 404}, ledger.not_in({200, 404})[:3]
    missing = [a for a in ledger.answers if a[0] == 404]
    assert all("doomed" in text for _, _, text in missing)


def test_a_model_that_cannot_load_fails_the_cold_start_with_the_reason_and_recovers_when_fixed(
    tools: Tools, k8s_namespace: str, ledger: Ledger, abalone_model: AbaloneModel,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A serverless endpoint whose model file is not a model: before any request (r62 D2: it
    said InService at zero, and CreateEndpoint's waiter passed, until a request found out) the
    status says Failed with the loader's reason, never InService; a request gets a 400 naming
    ModelLoadFailed (not a 5xx, not the hold's 60 s 503); it stays so past the idle timeout
    (one replica keeps trying the model); once a model is put at that path, requests are
    served again."""
    api = tools.cluster.api
    broken = tmp_path / "broken" / "model.tar.gz"
    broken.parent.mkdir()
    broken.write_bytes(b"this is not a model\n")
    manifest = serverless_manifest("broken", f"file://{broken}", idleTimeoutSeconds=10)
    apply_ok(tools, manifest, k8s_namespace)
    phases: list[str] = []

    def failed() -> bool:
        found = get_endpoint(api, k8s_namespace, "broken") or {}
        phases.append((found.get("status") or {}).get("phase", ""))
        return phases[-1] == "Failed"

    wait_until(failed, 180, "the model's load to fail before any request", interval=0.2)
    assert "InService" not in phases, phases
    url = url_of(tools)
    assert ledger.call(url, "broken", 0) == 400, ledger.answers[-1]
    _, kind, text = ledger.answers[-1]
    assert kind == "ValidationError" and "ModelLoadFailed" in text, text
    status = (get_endpoint(api, k8s_namespace, "broken") or {})["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ModelLoadFailed"), status
    assert status["message"].startswith("model cannot be loaded: "), status
    shown = tools.kubectl("get", "ie", "broken", "-n", k8s_namespace)
    assert shown.stdout.splitlines()[1].split()[:3] == ["broken", "serverless", "Failed"], shown
    # idle for three times the timeout (10 s, and the 2 s a gateway may take to report): still
    # Failed, and a replica still tries the model
    for _ in range(36):
        time.sleep(1)
        status = (get_endpoint(api, k8s_namespace, "broken") or {})["status"]
        assert (status["phase"], status["reason"]) == ("Failed", "ModelLoadFailed"), status
    assert replicas_of(tools, k8s_namespace, "broken") == 1

    broken.write_bytes(abalone_model.tarball.read_bytes())

    def served() -> bool:
        return ledger.call(url, "broken", len(ledger.answers)) == 200

    wait_until(served, 180, "the fixed model to serve", interval=1)
    assert set(ledger.codes()) <= {200, 400}, ledger.not_in({200, 400})[:3]
    settled(tools, k8s_namespace, "broken")


ROW = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"
BAD_BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    # case: (what the message must say, the request)
    "empty": ("empty", {"content": b"", "headers": CSV}),
    "three features": ("10", {"content": b"1,2,3", "headers": CSV}),
    "letters": ("column 4", {"content": b"1,0,0,x,0.3,0.09,0.5,0.2,0.1,0.1", "headers": CSV}),
    "not JSON": ("JSON", {"content": b'{"instances": [[1,2', "headers": {
        "content-type": "application/json"}}),
    "JSON NaN": ("NaN", {"content": b'{"instances": [[NaN,0,0,0,0,0,0,0,0,0]]}', "headers": {
        "content-type": "application/json"}}),
    "deep JSON": ("deep", {"content": b"[" * 50_000 + b"]" * 50_000, "headers": {
        "content-type": "application/json"}}),
    "invalid UTF-8": ("column 4", {"content": b"1,0,0,\xff\xfe,0,0,0,0,0,0", "headers": CSV}),
    "Latin-1": ("charset", {"content": ROW, "headers": {
        "content-type": "text/csv; charset=latin-1"}}),
    "image": ("image/png", {"content": ROW, "headers": {"content-type": "image/png"}}),
    "Accept image": ("image/png", {"content": ROW, "headers": {**CSV, "accept": "image/png"}}),
    "Accept q": ("q", {"content": ROW, "headers": {**CSV, "accept": "text/csv;q=2"}}),
    "gzip": ("gzip", {"content": ROW, "headers": {**CSV, "content-encoding": "gzip"}}),
    "too many rows": ("rows", {"content": b"1\n" * 200_001, "headers": CSV}),
    "4 MiB + 1": ("4194304", {"content": b"1" * (4 * 1024 * 1024 + 1), "headers": CSV}),
    "libsvm index": ("index", {"content": b"1 99:1.0", "headers": {
        "content-type": "text/libsvm"}}),
    "RecordIO": ("magic", {"content": b"\x00" * 64, "headers": {
        "content-type": "application/x-recordio-protobuf"}}),
    "target model": ("TargetModel", {"content": ROW, "headers": {
        **CSV, "x-amzn-sagemaker-target-model": "other.tar.gz"}}),
}  # fmt: skip


def test_bad_requests_through_the_gateway_are_4xx_naming_the_problem(
    tools: Tools, k8s_namespace: str, model_uri: str, ledger: Ledger
) -> None:
    """Each a 4xx with a JSON error saying what is wrong, never a 5xx; the endpoint serves good
    requests between and after them."""
    apply_ok(tools, serverless_manifest("bodies", model_uri, idleTimeoutSeconds=600), k8s_namespace)
    settled(tools, k8s_namespace, "bodies")
    url = url_of(tools)
    served_by_gateway(url, "bodies")
    invoke = f"{url}/endpoints/bodies/invocations"
    wrong = []
    for case, (says, request) in BAD_BODIES.items():
        response = httpx.post(invoke, timeout=120, **request)
        body = response.json()
        if not (400 <= response.status_code < 500 and says.lower() in body["message"].lower()):
            wrong.append((case, response.status_code, body))
        assert ledger.call(url, "bodies", len(wrong)) == 200, (case, ledger.answers[-1])
    doubled = httpx.post(invoke, content=ROW, headers=[("content-type", "text/csv"),
                                                       ("content-type", "text/csv")])  # fmt: skip
    if doubled.status_code != 400:
        wrong.append(("two Content-Types", doubled.status_code, doubled.json()))
    for method in ("GET", "PUT", "DELETE"):
        other = httpx.request(method, invoke, content=ROW, headers=CSV, timeout=30)
        if other.status_code != 405:
            wrong.append((method, other.status_code, other.text))
    chunked = httpx.post(invoke, content=iter([ROW[:10], ROW[10:]]), headers=CSV, timeout=30)
    if chunked.status_code != 200:
        wrong.append(("chunked", chunked.status_code, chunked.text))
    bare = httpx.post(invoke, content=ROW, timeout=30)  # no Content-Type: CSV, the default
    if bare.status_code != 200:
        wrong.append(("no Content-Type", bare.status_code, bare.text))
    upper = httpx.post(f"{url}/endpoints/BODIES/invocations", content=ROW, headers=CSV)
    if upper.status_code != 200:
        wrong.append(("upper case name", upper.status_code, upper.text))
    for name in ("x" * 300, "a%2Fb", "..", "bodies%00"):
        missing = httpx.post(f"{url}/endpoints/{name}/invocations", content=ROW, headers=CSV)
        if missing.status_code != 404:
            wrong.append((f"name {name[:20]}", missing.status_code, missing.text))
    assert not wrong, wrong
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    assert ledger.codes() == {200: len(ledger.answers)}


def shown_counts(tools: Tools, namespace: str, name: str) -> tuple[str, int, int]:
    """PHASE, READY and DESIRED as ``kubectl get ie`` prints them."""
    shown = tools.kubectl("get", "ie", name, "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "MODE", "PHASE", "READY", "DESIRED"], header
    cells = row.split()
    return cells[2], int(cells[3]), int(cells[4])


def pods_within(tools: Tools, namespace: str, low: int, high: int) -> bool:
    return low <= len(ready_pod_ips(tools.cluster.api, namespace, "bounds")) <= high


def test_realtime_replica_bounds_edited_under_traffic_lose_no_request(
    tools: Tools, k8s_namespace: str, model_uri: str, ledger: Ledger
) -> None:
    """min/max 1/1 -> 3/3 -> 1/2 -> 2/2 -> 1/1 while two clients call: each change reaches
    its replicas, kubectl get ie says so, and every request is a 200."""
    api = tools.cluster.api
    small = {"cpu": "100m", "memory": "512Mi"}  # three beside the chart on the node's two CPUs
    apply_ok(tools, endpoint_manifest("bounds", model_uri, resources=small), k8s_namespace)
    settled(tools, k8s_namespace, "bounds")
    with traffic(ledger, url_of(tools), "bounds", 2):
        more_answers(ledger, 5, "before the edits")
        for low, high in ((3, 3), (1, 2), (2, 2), (1, 1)):
            manifest = endpoint_manifest("bounds", model_uri, minReplicas=low, maxReplicas=high,
                                         resources=small)  # fmt: skip
            apply_ok(tools, manifest, k8s_namespace)

            def within(endpoint: dict[str, Any], low: int = low, high: int = high) -> bool:
                status = endpoint["status"]
                return (status.get("observedGeneration") == endpoint["metadata"]["generation"]
                        and low <= status.get("readyReplicas", 0) == status.get(
                            "desiredReplicas") <= high)  # fmt: skip

            wait_phase(api, k8s_namespace, "bounds", "InService", 180, also=within)
            wait_until(partial(pods_within, tools, k8s_namespace, low, high), 120,
                       f"{low}..{high} ready pods")  # fmt: skip
            phase, ready, desired = shown_counts(tools, k8s_namespace, "bounds")
            assert phase == "InService" and low <= ready <= high and low <= desired <= high, (
                low, high, phase, ready, desired)  # fmt: skip
            more_answers(ledger, 10, f"at {low}..{high}")
    assert ledger.codes() == {200: len(ledger.answers)}, ledger.not_in({200})[:3]


def test_realtime_to_serverless_under_traffic_keeps_its_replicas(
    tools: Tools, k8s_namespace: str, model_uri: str, ledger: Ledger
) -> None:
    """A realtime endpoint serving two clients becomes serverless (the CRD allows it; so does
    UpdateEndpoint): its replicas serve on, rather than going to zero (no request in the idle
    timeout? none was ever reported: a realtime endpoint's gateway writes no demand) and the
    next requests waiting for a cold start."""
    apply_ok(tools, endpoint_manifest("switch", model_uri), k8s_namespace)
    settled(tools, k8s_namespace, "switch")
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            seen.append(replicas_of(tools, k8s_namespace, "switch"))
            time.sleep(0.05)

    with traffic(ledger, url_of(tools), "switch", 2):
        more_answers(ledger, 5, "realtime")
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            manifest = serverless_manifest("switch", model_uri, idleTimeoutSeconds=600)
            apply_ok(tools, manifest, k8s_namespace)
            settled(tools, k8s_namespace, "switch")
            more_answers(ledger, 20, "serverless")
        finally:
            stop.set()
            watcher.join(timeout=30)
    assert seen and 0 not in seen, seen
    assert ledger.codes() == {200: len(ledger.answers)}, ledger.not_in({200})[:3]


def test_deleted_and_applied_again_at_once_it_serves_again(
    tools: Tools, k8s_namespace: str, model_uri: str, ledger: Ledger
) -> None:
    """kubectl delete, then apply of the same manifest at once, while two clients call (the
    old Deployment and pods may still be there, owned by the endpoint that is gone): the new
    endpoint reaches InService and serves; meanwhile callers are told it is gone or not in
    service yet, never a 5xx."""
    manifest = serverless_manifest("again", model_uri, idleTimeoutSeconds=600)
    apply_ok(tools, manifest, k8s_namespace)
    settled(tools, k8s_namespace, "again")
    with traffic(ledger, url_of(tools), "again", 2):
        more_answers(ledger, 10, "before the delete")
        for _ in range(2):
            deleted = tools.kubectl("delete", "ie", "again", "-n", k8s_namespace)
            assert deleted.returncode == 0, deleted.stderr
            apply_ok(tools, manifest, k8s_namespace)
            settled(tools, k8s_namespace, "again")
            wait_until(lambda: [a[0] for a in ledger.answers[-10:]] == [200] * 10, 120,
                       "ten 200s in a row after the re-creation")  # fmt: skip
    uid = (get_endpoint(tools.cluster.api, k8s_namespace, "again") or {})["metadata"]["uid"]
    deployment = tools.cluster.api.get(f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments/"
                                       "ie-again")  # fmt: skip
    assert [o["uid"] for o in deployment["metadata"]["ownerReferences"]] == [uid]
    assert set(ledger.codes()) <= {200, 400, 404}, ledger.not_in({200, 400, 404})[:3]
