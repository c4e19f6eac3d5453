"""The pure parts of ``infermodes up``: manifests, the CLI's table, the child registry, and
progress from batch summaries."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from infermodes.endpoints.demand import GatewayDemand
from infermodes.endpoints.plan import ProcessPlan, replica_template
from infermodes.endpoints.spec import Phase
from infermodes.endpoints.status import Progress, Status, describe_failures, summary_progress
from infermodes.local.children import Child, Registry, start_time
from infermodes.local.client import age, describe, row, table
from infermodes.local.demand import LocalDemandSink
from infermodes.local.manifests import (
    DEFAULT_NAMESPACE,
    MAX_ALIASED_NODES,
    MAX_MANIFEST_BYTES,
    NAMESPACE,
    ExcessiveAliasing,
    Manifest,
    ManifestError,
    NameTaken,
    OwnedElsewhere,
    aliased_nodes,
    load_paths,
    parse_document,
    parse_text,
    placed,
)
from infermodes.local.supervisor import (
    LocalEndpoint,
    Supervisor,
    probed_readiness,
    runs_as_before,
)
from infermodes.local.zygote import Zygote
from infermodes.metrics import OperatorMetrics, WorkerMetrics, fetch_metrics_text, serve_metrics
from infermodes.queueing.broker import Backlog
from infermodes.settings import GATEWAY_INVOCATION_TIMEOUT_SECONDS
from tests.support.local import laughs

REPO = Path(__file__).resolve().parents[2]


def no_owner(_manifests: list[Manifest], _source: str) -> None:
    """The API router's owner check where no endpoint is the platform API's."""


GOOD = """\
apiVersion: infermodes.dev/v1alpha1
kind: InferenceEndpoint
metadata: {name: abalone}
spec:
  mode: realtime
  model: {uri: file:///m/model.tar.gz}
  realtime: {}
"""


def test_the_example_manifests_are_read_as_kubectl_would_apply_them() -> None:
    found = load_paths([REPO / "examples" / "abalone"])
    modes = {m.name: str(m.spec.mode) for m in found}
    assert modes == {"abalone-async": "async", "abalone-batch": "batch", "abalone": "realtime",
                     "abalone-serverless": "serverless"}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (GOOD.replace("mode: realtime", "mode: sometimes"), "spec.mode"),
        (GOOD.replace("model: {uri: file:///m/model.tar.gz}", "model: {}"), "spec.model.uri"),
        (GOOD + "  extra: 1\n", "spec.extra"),
        (GOOD.replace("metadata: {name: abalone}", "metadata: {}"), "metadata.name"),
        (GOOD.replace("kind: InferenceEndpoint", "kind: Deployment"), "apiVersion/kind"),
        ("a: [", "not valid YAML"),
        ("", "no InferenceEndpoint"),
        (GOOD.replace("realtime: {}", "serverless: {}"), "abalone): spec.realtime"),
        (GOOD.replace("{name: abalone}", "{name: 123}"), "metadata.name must be a string (a DNS"),
        (GOOD + "  serverless: {}\n", "spec.serverless is not allowed when mode is realtime"),
        (
            GOOD + "  async: {outputPath: 'file:///o'}\n",
            "spec.async is not allowed when mode is realtime",
        ),
        (GOOD.replace("realtime: {}", ""), "spec.realtime is required when mode is realtime"),
        (
            GOOD.replace("realtime: {}", "realtime: {scaling: {target: .nan}}"),
            "abalone): spec.realtime.scaling.target: must be a finite number",
        ),
        (
            GOOD.replace("realtime: {}", "realtime: {scaling: {target: -.inf}}"),
            "abalone): spec.realtime.scaling.target: must be a finite number",
        ),
        (GOOD + "  x: [1, {y: .inf}]\n", "abalone): spec.x[1].y: must be a finite number"),
    ],
)
def test_a_bad_manifest_is_an_error_naming_the_file_and_field(text: str, named: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_text(text, "ep.yaml")
    assert "ep.yaml" in str(caught.value)
    assert named in str(caught.value)


def test_a_webhook_in_a_secret_is_refused_by_up_which_has_no_secrets() -> None:
    """Ignored, the endpoint would run and never notify: refused, naming the field to use."""
    hooked = GOOD.replace("mode: realtime", "mode: async").replace(
        "realtime: {}",
        "async: {outputPath: 'file:///o', notification: "
        "{errorWebhookSecretRef: {name: infermodes-hooks, key: err}}}",
    )
    with pytest.raises(ManifestError) as caught:
        parse_text(hooked, "ep.yaml")
    said = "spec.async.notification.errorWebhookSecretRef: infermodes up has no Kubernetes Secrets"
    assert said in str(caught.value) and "give the URL in errorWebhook" in str(caught.value)


@pytest.mark.parametrize(
    "name",
    ["'..'", "'../..'", "a/b", "UPPER", "'with space'", "-lead", "trail-", "1abc", "名前",
     "a%2Fb", "'a\\n'", '"a\\n"', "x" * 51],
)  # fmt: skip
def test_a_name_the_crd_refuses_is_refused_before_it_becomes_a_path(name: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_text(GOOD.replace("{name: abalone}", f"{{name: {name}}}"), "ep.yaml")
    message = str(caught.value)
    assert message.startswith("ep.yaml document 1: metadata.name ") and "DNS-1035" in message
    assert len(message) < 400  # a long name is shortened, not echoed whole


def test_the_longest_name_the_crd_takes_is_taken() -> None:
    (manifest,) = parse_text(GOOD.replace("{name: abalone}", "{name: a" + "b" * 49 + "}"), "e")
    assert len(manifest.name) == 50


@pytest.mark.parametrize("namespace", ["Prod", "'[local]'", "123", "-x", "a" * 64, "{a: b}"])
def test_a_namespace_kubernetes_would_refuse_is_refused_naming_it(namespace: str) -> None:
    text = GOOD.replace("{name: abalone}", f"{{name: abalone, namespace: {namespace}}}")
    with pytest.raises(ManifestError) as caught:
        parse_text(text, "ep.yaml")
    message = str(caught.value)
    assert message.startswith("ep.yaml document 1 (abalone): metadata.namespace "), message
    assert "must be a DNS-1123 label of at most 63 characters" in message
    assert len(message) < 400  # a long one is cut short


@pytest.mark.parametrize(
    ("metadata", "namespace"),
    [
        ("{name: abalone, namespace: prod}", "prod"),
        ("{name: abalone, namespace: team-a1}", "team-a1"),
        ("{name: abalone, namespace: local}", "local"),
        ("{name: abalone, namespace: ''}", ""),
        ("{name: abalone}", ""),
    ],
)
def test_a_valid_namespace_is_taken_and_kept(metadata: str, namespace: str) -> None:
    """``up`` refused any namespace but ``local``: most manifests say ``default`` or a team's,
    and ``up`` promises to run the cluster's YAML."""
    (manifest,) = parse_text(GOOD.replace("{name: abalone}", metadata), "ep.yaml")
    assert manifest.namespace == namespace
    assert manifest.document["metadata"].get("namespace") == (namespace or None)


def test_a_manifest_is_placed_in_its_namespace_that_of_its_name_or_default() -> None:
    """Without a namespace: the existing endpoint's (as kubectl's would be the one it was
    made in), else ``default``. One name in two namespaces is refused: up keeps one endpoint
    per name, so ns-x in staging would have replaced ns-x in prod without a word."""
    (bare,) = parse_text(GOOD, "ep.yaml")
    (staging,) = parse_text(GOOD.replace("{name: abalone}", "{name: abalone, namespace: staging}"),
                            "st.yaml")  # fmt: skip
    assert placed(bare, None).namespace == DEFAULT_NAMESPACE == "default"
    assert placed(bare, "prod").namespace == "prod"
    assert placed(bare, "prod").document["metadata"] == {"name": "abalone", "namespace": "prod"}
    assert placed(staging, None).namespace == "staging"
    assert placed(staging, "staging") == placed(staging, None)
    assert placed(placed(bare, "prod"), "prod") == placed(bare, "prod")  # placing twice: the same
    with pytest.raises(NameTaken) as caught:
        placed(staging, "prod")
    assert str(caught.value) == (
        "st.yaml document 1 (abalone): endpoint abalone exists in namespace 'prod', not "
        "'staging': infermodes up keeps one endpoint per name, whatever its namespace; delete "
        "abalone first, or give this one another name"
    )
    with pytest.raises(NameTaken):  # placed in default, then applied again against prod's
        placed(placed(bare, None), "prod")


def test_a_name_defined_twice_is_refused_naming_both_documents(tmp_path: Path) -> None:
    """In one file or across a folder's, on up -f (``load_paths``) and in one request to up's
    API (``parse_text``) alike: ``apply`` took the second as an update of the first."""
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    with pytest.raises(ManifestError) as across:
        load_paths([tmp_path])
    assert str(across.value) == (
        f"endpoint abalone is defined twice: in {tmp_path / 'a.yaml'} document 1 and in "
        f"{tmp_path / 'b.yaml'} document 1 (give each endpoint one document)"
    )
    other = GOOD.replace("{name: abalone}", "{name: other}")
    with pytest.raises(ManifestError) as within:
        parse_text(f"{GOOD}---\n{other}---\n{GOOD}", "twin.yaml")
    assert str(within.value) == (
        "endpoint abalone is defined twice: in twin.yaml document 1 and in twin.yaml document 3 "
        "(give each endpoint one document)"
    )


def test_a_manifest_file_over_the_limit_is_refused_unparsed_naming_it_its_size_and_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``up -f`` took a 10 MB manifest after 18 s of parsing, where ``apply`` refused it (after
    as long) naming no file: one limit, checked before the YAML parser sees a byte."""
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "#" * MAX_MANIFEST_BYTES + "\n")
    monkeypatch.setattr(yaml, "safe_load_all", None)  # a parse would fail with a TypeError
    with pytest.raises(ManifestError) as caught:
        load_paths([tmp_path])
    size = big.stat().st_size
    assert str(caught.value) == (
        f"{big}: {size} bytes, over the limit of {MAX_MANIFEST_BYTES} bytes (1 MiB) for one "
        "manifest file: split its documents into several files of a folder given to -f, or "
        "remove what is not the manifest (long comments)"
    )


def test_a_folder_that_cannot_be_listed_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder access() calls readable may still refuse its listing (``/proc/1/map_files``
    without CAP_SYS_ADMIN): ``up -f`` and ``apply -f`` ended in a PermissionError's traceback.
    The listing is made to fail here, as it fails there."""
    (tmp_path / "a.yaml").write_text(GOOD)

    def refused(path: Path) -> Iterator[Path]:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "iterdir", refused)
    with pytest.raises(ManifestError, match=f"^{tmp_path}: cannot list it: Permission denied$"):
        load_paths([tmp_path])


def test_a_file_that_is_not_utf8_is_refused_naming_it(tmp_path: Path) -> None:
    """As ``infermodes apply`` refuses it: not a UnicodeDecodeError's traceback from ``up``."""
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00\x00binary")
    with pytest.raises(ManifestError, match=r"binary\.yaml: not UTF-8 text: byte 0xff on line 1"):
        load_paths([tmp_path])


def test_get_prints_the_columns_of_kubectl_get_ie() -> None:
    now = datetime(2026, 1, 1, 1, 0, 0, tzinfo=UTC)
    obj = {
        "metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:58:00Z"},
        "spec": {"mode": "async"},
        "status": {"phase": "InService", "readyReplicas": 1, "desiredReplicas": 2,
                   "backlog": {"total": 7}},
    }  # fmt: skip
    assert row(obj, now) == ("a", "async", "InService", "1", "2", "7", "", "2m")
    lines = table([row(obj, now)]).splitlines()
    assert lines[0].split() == ["NAME", "MODE", "PHASE", "READY", "DESIRED", "BACKLOG",
                                "PROGRESS", "AGE"]  # fmt: skip
    assert lines[1].split() == ["a", "async", "InService", "1", "2", "7", "2m"]
    assert age("2026-01-01T00:00:00Z", now) == "1h"
    assert age("garbage", now) == "<unknown>"


def test_describe_says_which_running_processes_are_ready() -> None:
    process = {"pid": 7, "restarts": 0, "lastExit": None, "log": "/l"}
    obj = {
        "metadata": {"name": "a"},
        "spec": {"mode": "async", "model": {"uri": "file:///m.tar.gz"}},
        "status": {"phase": "InService", "processes": [
            {**process, "key": "a/worker-0", "running": True, "ready": True},
            {**process, "key": "a/worker-1", "running": True, "ready": False},
            {**process, "key": "a/worker-2", "running": False, "ready": False, "lastExit": 1},
            {**process, "key": "b/instance-0", "running": True, "ready": None},
        ]},
    }  # fmt: skip
    text = describe(obj)
    assert "a/worker-0  pid 7  running, ready  " in text
    assert "a/worker-1  pid 7  running, not ready  " in text
    assert "a/worker-2  pid 7  exited 1  " in text
    assert "b/instance-0  pid 7  running  " in text  # a batch instance: no readiness


def test_describe_shows_the_backlog_and_how_long_its_oldest_request_waited() -> None:
    backlog: dict[str, float | None] = {"ready": 3, "inFlight": 2, "oldestAgeSeconds": 12.345}
    obj = {
        "metadata": {"name": "a"},
        "spec": {"mode": "async", "model": {"uri": "file:///m.tar.gz"}},
        "status": {"phase": "InService", "reason": "Ready", "readyReplicas": 1,
                   "desiredReplicas": 1, "backlog": backlog},
    }  # fmt: skip
    assert "Backlog:   3 ready, 2 in flight, the oldest waiting 12.3 s" in describe(obj)
    backlog["oldestAgeSeconds"] = None  # unknown: not shown
    assert "Backlog:   3 ready, 2 in flight\n" in describe(obj)
    backlog["waitingWebhookJobs"] = 4
    assert "Backlog:   3 ready, 2 in flight; 4 webhook job(s) waiting in the outbox\n" in (
        describe(obj)
    )


def test_the_registry_kills_only_processes_whose_start_time_matches(tmp_path: Path) -> None:
    """Our own PID with a start time that is not ours: a reused PID, left alone."""
    path = tmp_path / "children.json"
    path.write_text(json.dumps([{"key": "x/server-0", "pid": os.getpid(), "start": "1"}]))
    assert Registry(path).kill_orphans() == []
    assert not path.exists()
    assert Registry(tmp_path / "missing.json").kill_orphans() == []


@pytest.mark.parametrize("gone", ["another process has its PID", "killed, not yet reaped"])
def test_the_children_of_an_up_that_still_runs_are_left_alone(tmp_path: Path, gone: str) -> None:
    """A copy of a live state dir names the live ``up``'s children: starting ``up`` on it
    SIGKILLed them. Only when the recording ``up`` is gone are they orphans: its PID another
    process's, or a SIGKILLed ``up`` its parent has not reaped yet (a zombie: it was taken for
    a live one, and its children were left running beside the restarted ``up``'s)."""
    owner = subprocess.Popen(["sleep", "60"])
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a group of its own
    try:
        path = tmp_path / "children.json"
        entry = {"key": "x/server-0", "pid": child.pid, "start": start_time(child.pid)}
        live = {"pid": owner.pid, "start": start_time(owner.pid)}
        path.write_text(json.dumps({"owner": live, "children": [entry]}))
        assert Registry(path).kill_orphans() == []
        assert child.poll() is None and not path.exists()
        if gone == "another process has its PID":
            recorded = {"pid": owner.pid, "start": "1"}
        else:
            recorded = live
            owner.kill()  # not waited for: a zombie
            deadline = time.monotonic() + 10
            while Path(f"/proc/{owner.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                assert time.monotonic() < deadline, "the killed owner never became a zombie"
                time.sleep(0.01)
        path.write_text(json.dumps({"owner": recorded, "children": [entry]}))
        assert Registry(path).kill_orphans() == ["x/server-0"]
        assert child.wait(10) == -signal.SIGKILL
    finally:
        for process in (owner, child):
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    "text", ['{"a": 1}', '[{"key": "x"}]', "[1]", '{"children": 5}', '[{"pid": true}]', "null"]
)
def test_a_children_file_of_another_shape_stops_nothing(tmp_path: Path, text: str) -> None:
    path = tmp_path / "children.json"
    path.write_text(text)
    assert Registry(path).kill_orphans() == []


def test_progress_and_failures_from_a_batch_summary() -> None:
    summary = {
        "version": 1, "units": {"assigned": 3, "succeeded": 1, "skipped": 1, "failed": 1},
        "records": 40, "failures": [{"object": "file:///in/b.csv", "line": 2, "reason": "bad"}],
        "error": "cannot list",
    }  # fmt: skip
    found, failures = summary_progress(summary)
    assert found == Progress(total=3, done=2, failed=1, records=40)
    assert describe_failures(failures) == "file:///in/b.csv line 2: bad; cannot list"
    many = [{"object": f"o{i}", "line": None, "reason": "r"} for i in range(7)]
    assert describe_failures(many).endswith("o4: r; and 2 more")
    # 300 objects failed; the summaries had room for these 7: the rest are counted too
    assert describe_failures(many, 300).endswith("o4: r; and 295 more")
    # an instance whose summary had room for none tells its count itself: not twice
    cut = {"version": 1, "index": 0, "state": "Failed", "units": {"assigned": 300, "failed": 300}}
    found, stand_in = summary_progress(cut)
    told = describe_failures(stand_in, found.failed)
    assert told == "instance 0: 300 unit(s) failed (see its summary under the output prefix)"
    # one failure named of two, and a job-wide error: one more
    mixed = [{"object": "o1", "line": 3, "reason": "bad"}, {"object": None, "reason": "x"}]
    assert describe_failures(mixed, 2).endswith("x; and 1 more")
    told_thrice = [{"object": None, "line": None, "reason": "no input objects under x"}] * 3
    assert describe_failures(told_thrice) == "no input objects under x"


class FixedQueue:
    """A broker whose queue always reads the same."""

    def __init__(self, backlog: Backlog, webhook_jobs: int = 0) -> None:
        self.found = backlog
        self.webhook_jobs = webhook_jobs

    def backlog(self, endpoint: str) -> Backlog:
        return self.found

    def waiting_webhooks(self, endpoint: str) -> int:
        return self.webhook_jobs  # read whether the endpoint has webhooks or not


class FakeChild:
    def __init__(self, running: bool, key: str = "", started_at: float = 0.0) -> None:
        self.is_running = running
        self.key = key
        self.pid = 100
        self.started_at = started_at
        self.exits = 0

    def running(self) -> bool:
        return self.is_running

    def check(self, now: float) -> bool:
        return False  # it never ends by itself

    def stop(self) -> None:
        self.is_running = False


@contextlib.contextmanager
def worker_port(in_flight: float, taken_at: float) -> Iterator[int]:
    """A worker's metrics served over real HTTP on loopback, as ``infermodes worker`` does."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.in_flight.set(in_flight)
    metrics.dequeued_accepted_at.set(taken_at)
    server, thread = start_http_server(0, "127.0.0.1", registry)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def to_remove(supervisor: Supervisor, endpoint: LocalEndpoint, wanted: int) -> list[str]:
    """The children a scale-in of ``up``'s tick stops, its workers' metrics read when asked."""
    return asyncio.run(supervisor._to_remove(endpoint, wanted, Supervisor._metrics_once(endpoint)))


def decided(supervisor: Supervisor, endpoint: LocalEndpoint, now: float) -> int:
    """One decision of ``up``'s tick, its workers' metrics read when it asks."""
    return asyncio.run(supervisor._decide(endpoint, now, Supervisor._metrics_once(endpoint)))


def decide(tmp_path: Path, backlog: Backlog, running: dict[str, int], starting: int
           ) -> tuple[int, LocalEndpoint]:  # fmt: skip
    """One async decision of ``infermodes up``: ``running`` workers (key -> metrics port)
    and ``starting`` more that do not run yet; 1 request per worker is the target."""
    supervisor = Supervisor(tmp_path, FixedQueue(backlog), "amqp://127.0.0.1:1/", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "async.yaml").read_text())
    document["spec"]["async"].update(targetBacklogPerInstance=1, maxReplicas=6)
    endpoint = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    for key, port in running.items():
        endpoint.children[key] = FakeChild(True, key)  # type: ignore[assignment]
        endpoint.metrics_ports[key] = port
    for n in range(starting):
        endpoint.children[f"starting-{n}"] = FakeChild(False, f"starting-{n}")  # type: ignore[assignment]
    endpoint.initialized = True  # a pool its first decision started
    replicas = decided(supervisor, endpoint, time.monotonic())
    return replicas, endpoint


def test_up_starts_a_new_pool_at_its_initial_replicas(tmp_path: Path) -> None:
    """As the operator makes its Deployment: initialReplicas workers, not minReplicas (0)."""
    empty = Backlog(ready=0, unacked=0, consumers=0, source="amqp+management")
    supervisor = Supervisor(tmp_path, FixedQueue(empty), "amqp://127.0.0.1:1/", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "async.yaml").read_text())
    document["spec"]["async"].update(minReplicas=0, maxReplicas=5, initialReplicas=3)
    endpoint = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    now = time.monotonic()
    assert decided(supervisor, endpoint, now) == 3
    for key in ("w0", "w1", "w2"):
        endpoint.children[key] = FakeChild(True, key)  # type: ignore[assignment]
    assert decided(supervisor, endpoint, now + 1) == 3  # the start's cooldown


def async_pool_under_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready: list[int]
) -> tuple[Supervisor, dict[str, Any]]:
    """``up`` over an empty queue, and the async example (initialReplicas 2, minReplicas 0)
    to add to it, its workers as ready as ``ready[0]`` says."""
    empty = Backlog(ready=0, unacked=0, consumers=0, source="sqlite", unacked_exact=True)
    supervisor = Supervisor(tmp_path, FixedQueue(empty), "amqp://127.0.0.1:1/", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "async.yaml").read_text())
    document["spec"]["async"].update(minReplicas=0, maxReplicas=5, initialReplicas=2)
    monkeypatch.setattr(supervisor, "_ready", lambda endpoint: ready[0])
    return supervisor, document


def crashed_often(endpoint: LocalEndpoint, key: str, ports: dict[str, int], log: Path) -> None:
    """A running process of ``endpoint`` that has exited ``CRASH_RESTARTS`` times, never ready
    (``ports``: the endpoint's metrics ports for a worker, its ports for a model server)."""
    child = FakeChild(True, key)
    child.exits, child.last_exit, child.log_path = 3, 1, log  # type: ignore[attr-defined]
    endpoint.children[key] = child  # type: ignore[assignment]
    ports[key] = 1


def test_up_s_async_pool_is_creating_until_its_initial_workers_are_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DescribeEndpoint said InService with CurrentInstanceCount 0 right after CreateEndpoint
    (and UpdateEndpoint) of an async variant of InitialInstanceCount 1. A pool started at its
    initial workers is Creating until they are ready, then InService for good; one started at
    zero is InService at once (requests queue). Over one that served, as the operator says it:
    a new spec (whose workers ``up`` all starts again) is Updating, RollingOut, until every
    worker it wants is ready; a changed initialReplicas alone is a scale (InService), not a
    start (``up`` said Updating, StartingWorkers, for both)."""
    ready = [0]
    supervisor, document = async_pool_under_up(tmp_path, monkeypatch, ready)

    def shown(endpoint: LocalEndpoint) -> tuple[str, str]:
        endpoint.desired = decided(supervisor, endpoint, time.monotonic())
        for n in range(endpoint.desired):  # started, as the tick does
            endpoint.children[f"w{n}"] = FakeChild(True, f"w{n}")  # type: ignore[assignment]
        supervisor._set_status(endpoint)
        return endpoint.status.phase.value, endpoint.status.reason

    created = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    assert shown(created) == ("Creating", "StartingWorkers")
    assert created.status.message.startswith("0/2 initial workers ready")
    ready[0] = 1
    assert shown(created) == ("Creating", "StartingWorkers")
    ready[0] = 2
    assert shown(created)[0] == "InService"
    ready[0] = 0  # its workers restart, say: the start is over
    assert shown(created)[0] == "InService"
    document["spec"]["async"]["initialReplicas"] = 3  # its processes run as before: a scale
    supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z", created)
    assert shown(created) == ("InService", "Processing")  # 0 of its 3: as the operator
    assert created.desired == 3
    updated = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    updated.replaced_in_service = True  # a new spec over the endpoint that served
    assert shown(updated) == ("Updating", "RollingOut")
    assert updated.status.message.endswith("0/3 workers")
    ready[0] = 3
    assert shown(updated)[0] == "InService"
    ready[0] = 1  # its workers restart, say: the rollout is over
    assert shown(updated)[0] == "InService"
    del document["spec"]["async"]["initialReplicas"]  # started at minReplicas: 0
    ready[0] = 0
    at_zero = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    assert shown(at_zero) == ("InService", "Idle")  # none queued, none wanted
    # its initial workers keep crashing (a broker URL they refuse, say): Failed, as on the
    # operator, not StartingWorkers for ever (a waiter for InService never ended)
    crashing = supervisor._add(
        parse_document(
            document
            | {
                "spec": {
                    **document["spec"],
                    "async": {**document["spec"]["async"], "initialReplicas": 1},
                }
            },
            "test",
        ),
        "2026-01-01T00:00:00Z",
    )
    crashing.desired = decided(supervisor, crashing, time.monotonic())
    crashed_often(crashing, "w0", crashing.metrics_ports, tmp_path / "w0.log")
    supervisor._set_status(crashing)
    assert (crashing.status.phase.value, crashing.status.reason) == ("Failed", "ContainerCrashing")
    assert crashing.status.message.startswith("process w0 keeps crashing: exited with 1")


def test_an_endpoint_up_replaced_that_failed_and_recovers_is_starting_not_rolling_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async pool a new spec replaced in service, whose workers then kept crashing (Failed),
    said Updating (RollingOut) once they came back, where the operator, whose last status was
    Failed, says Creating (StartingWorkers): ``status.still_served``. So does a realtime
    endpoint that served, failed and recovers: Creating until every replica is ready, as the
    operator says it (up said InService)."""
    ready = [0]
    supervisor, document = async_pool_under_up(tmp_path, monkeypatch, ready)
    updated = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    updated.replaced_in_service = True  # a new spec over the endpoint that served
    updated.desired = decided(supervisor, updated, time.monotonic())
    worker = FakeChild(True, "w0")
    updated.children["w0"] = worker  # type: ignore[assignment]
    updated.metrics_ports["w0"] = 1
    supervisor._set_status(updated)
    assert (updated.status.phase.value, updated.status.reason) == ("Updating", "RollingOut")
    worker.exits, worker.last_exit, worker.log_path = 3, 1, tmp_path / "w0.log"  # type: ignore[attr-defined]
    supervisor._set_status(updated)
    assert (updated.status.phase.value, updated.status.reason) == ("Failed", "ContainerCrashing")
    ready[0] = 1  # one of its two is back
    supervisor._set_status(updated)
    assert (updated.status.phase.value, updated.status.reason) == ("Creating", "StartingWorkers")
    ready[0] = 2
    supervisor._set_status(updated)
    assert (updated.status.phase.value, updated.status.reason) == ("InService", "Processing")

    realtime = yaml.safe_load((REPO / "examples" / "abalone" / "realtime.yaml").read_text())
    realtime["spec"]["realtime"] |= {"minReplicas": 1, "maxReplicas": 5, "initialReplicas": 3}
    supervisor, endpoint = actuated_once(tmp_path / "rt", monkeypatch, realtime)
    monkeypatch.setattr(supervisor, "_ready", lambda endpoint: ready[0])
    ready[0] = 3
    supervisor._set_status(endpoint)
    assert endpoint.status.phase.value == "InService"
    ready[0] = 0
    crashed_often(endpoint, "server-9", endpoint.ports, tmp_path / "s.log")
    supervisor._set_status(endpoint)
    assert (endpoint.status.phase.value, endpoint.status.reason) == ("Failed", "ContainerCrashing")
    ready[0] = 1
    supervisor._set_status(endpoint)
    assert (endpoint.status.phase.value, endpoint.status.reason) == ("Creating", "Creating")
    assert endpoint.status.message.startswith("1/3 replicas ready")


def test_an_async_update_under_up_is_said_at_once_not_creating_until_its_first_look(
    tmp_path: Path,
) -> None:
    """Until its first decision, the endpoint a new async spec made said ``Creating``
    (``Starting``), which the operator never says of an endpoint that served (a
    DescribeEndpoint right after UpdateEndpoint). Said at once, as the first look will: a
    rollout (Updating) over one in service, a start (Creating) over one that never served,
    in service at once for a pool that starts at zero."""
    empty = Backlog(ready=0, unacked=0, consumers=0, source="sqlite", unacked_exact=True)
    supervisor = Supervisor(tmp_path, FixedQueue(empty), "amqp://127.0.0.1:1/", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "async.yaml").read_text())
    document["spec"]["async"]["initialReplicas"] = 2
    name = document["metadata"]["name"]

    def updated(before: Phase, **block: int) -> tuple[str, str]:
        supervisor.apply(parse_document(document, "test"))
        endpoint = supervisor.endpoints[name]
        endpoint.status = dataclasses.replace(endpoint.status, phase=before)
        changed = copy.deepcopy(document)
        changed["spec"]["async"].update(block)
        supervisor.apply(parse_document(changed, "test"))
        status = supervisor.object_of(supervisor.endpoints[name])["status"]
        supervisor.delete(name)
        return status["phase"], status["reason"]

    assert updated(Phase.IN_SERVICE, maxConcurrentInvocationsPerInstance=2) == (
        "Updating", "RollingOut"
    )  # fmt: skip
    assert updated(Phase.CREATING, maxConcurrentInvocationsPerInstance=2) == (
        "Creating", "StartingWorkers"
    )  # fmt: skip
    assert updated(Phase.IN_SERVICE, initialReplicas=0)[0] == "InService"


def test_up_s_status_shows_the_webhook_jobs_waiting_beside_the_backlog(tmp_path: Path) -> None:
    """Webhook jobs waiting in the outbox keep a worker: the status says so, where it shows the
    backlog (``status.backlog``, which ``infermodes describe`` prints), not only the decision."""
    empty = Backlog(ready=0, unacked=0, consumers=1, source="sqlite", unacked_exact=True)
    supervisor = Supervisor(tmp_path, FixedQueue(empty, webhook_jobs=2), "amqp://127.0.0.1:1/", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "async.yaml").read_text())
    endpoint = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    decided(supervisor, endpoint, time.monotonic())
    shown = endpoint.status.to_patch(1, None)["backlog"]
    assert (shown["total"], shown["waitingWebhookJobs"]) == (0, 2)


def test_up_checks_a_sampled_in_flight_count_against_its_workers(tmp_path: Path) -> None:
    """RabbitMQ's sampled count says 1 while the one running worker of three holds 4: the
    pool is not shrunk on the sample, it grows to what is held; the oldest waiting request's
    age comes from what the workers took last (a quorum queue does not report it)."""
    with worker_port(4, time.time() - 7) as port:
        sampled = Backlog(ready=1, unacked=0, consumers=1, source="amqp+management")
        replicas, endpoint = decide(tmp_path, sampled, {"abalone-async/worker-0": port}, 2)
    assert replicas == 5  # 1 waiting + 4 held, at 1 each
    backlog = endpoint.status.backlog
    assert backlog is not None and backlog.in_flight == 4
    assert backlog.oldest_age is not None and 6 <= backlog.oldest_age < 60


def test_up_keeps_a_pool_whose_worker_cannot_say_and_names_it(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        empty = Backlog(ready=0, unacked=0, consumers=1, source="amqp+management")
        silent = {"abalone-async/worker-0": closed.getsockname()[1]}
        replicas, endpoint = decide(tmp_path, empty, silent, 2)
    finally:
        closed.close()
    assert replicas == 3 and endpoint.silent == ("abalone-async/worker-0",)
    Supervisor(tmp_path, FixedQueue(empty), "", 0)._set_status(endpoint)  # type: ignore[arg-type]
    assert endpoint.status.reason == "InFlightUnknown"  # as the operator's status says it
    assert "worker(s) abalone-async/worker-0 cannot say what they hold" in (endpoint.status.message)


def test_up_does_not_ask_the_workers_of_the_embedded_queue(tmp_path: Path) -> None:
    """Its leases are counted exactly: a worker that cannot say does not hold the pool."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    try:
        exact = Backlog(ready=0, unacked=1, consumers=1, source="sqlite", unacked_exact=True)
        replicas, endpoint = decide(tmp_path, exact, {"w": closed.getsockname()[1]}, 2)
    finally:
        closed.close()
    assert replicas == 1 and endpoint.silent == ()


def async_scale_in(
    tmp_path: Path, held: dict[str, float | None], consuming: set[str], *wanted: int
) -> list[list[str]]:
    """The workers ``up``'s scale-in of an async pool to each of ``wanted`` stops: running
    workers (oldest first) holding ``held`` over real HTTP (None: their metrics port refuses
    connections), the ``consuming`` ones ready, and one more in its restart's back-off."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 1, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "async.yaml").read_text())
    endpoint = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    with contextlib.ExitStack() as stack:
        for key, count in held.items():
            if count is None:
                closed = stack.enter_context(socket.socket())
                closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
                port = closed.getsockname()[1]
            else:
                port = stack.enter_context(worker_port(count, 0))
            endpoint.children[key] = FakeChild(True, key)  # type: ignore[assignment]
            endpoint.metrics_ports[key] = port
        endpoint.children["backing-off"] = FakeChild(False, "backing-off")  # type: ignore[assignment]
        endpoint.consuming = frozenset((key, 0.0) for key in consuming)
        return [to_remove(supervisor, endpoint, count) for count in wanted]


def test_up_s_scale_in_stops_the_workers_holding_least_and_servers_newest_first(
    tmp_path: Path,
) -> None:
    """An async pool of consuming workers shrinking to one: the one not running (in its
    restart's back-off: it holds nothing) and the idle one go, then the one holding least; the
    one that cannot say stays (it may hold a full prefetch). A realtime endpoint's servers go
    newest first."""
    held = {"busy": 2.0, "idle": 0.0, "silent": None}
    removed = async_scale_in(tmp_path, held, set(held), 1, 4)
    assert removed == [["backing-off", "idle", "busy"], []]
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 1, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "realtime.yaml").read_text())
    servers = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    for key in ("s0", "s1", "s2"):
        servers.children[key] = FakeChild(True, key)  # type: ignore[assignment]
    assert to_remove(supervisor, servers, 1) == ["s2", "s1"]


def test_up_s_scale_in_stops_the_workers_not_ready_first_whatever_they_hold(
    tmp_path: Path,
) -> None:
    """As a ReplicaSet removes unready pods before ready ones, whatever their deletion cost:
    a worker that does not consume (its ``/readyz`` said no: it lost its broker holding two,
    or it cannot be read at all) goes before an idle one that consumes, and of the unready
    the one holding fewer first (the one not running, holding nothing, before them)."""
    held = {"idle": 0.0, "cut-off": 2.0, "silent": None}
    removed = async_scale_in(tmp_path, held, {"idle"}, 1, 2, 3)
    assert removed == [
        ["backing-off", "cut-off", "silent"],
        ["backing-off", "cut-off"],
        ["backing-off"],
    ]


def test_up_reads_each_worker_s_metrics_once_in_a_tick_that_scales_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RabbitMQ's figures would let a pool of two shrink to one (its maxReplicas lowered):
    the decision checks what the workers hold, and the scale-in ranks them by it, both from
    one read of each worker's metrics."""
    reads: collections.Counter[int] = collections.Counter()

    def counted(host: str, port: int, timeout: float) -> str | None:
        reads[port] += 1
        return fetch_metrics_text(host, port, timeout)

    monkeypatch.setattr("infermodes.local.supervisor.fetch_metrics_text", counted)
    sampled = Backlog(ready=0, unacked=0, consumers=2, source="amqp+management")
    supervisor = Supervisor(tmp_path, FixedQueue(sampled), "amqp://127.0.0.1:1/", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "async.yaml").read_text())
    document["spec"]["async"].update(maxReplicas=1)
    endpoint = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    endpoint.initialized = True  # a pool its first decision started
    with worker_port(0, 0) as older, worker_port(1, 0) as newer:
        ports = {"w0": older, "w1": newer}
        for key, port in ports.items():
            endpoint.children[key] = FakeChild(True, key)  # type: ignore[assignment]
            endpoint.metrics_ports[key] = port
        asyncio.run(supervisor._actuate(endpoint, time.monotonic()))
    assert list(endpoint.children) == ["w1"]  # the idle one went
    assert reads == {older: 1, newer: 1}


@pytest.mark.parametrize(
    ("answers", "readiness"),
    [
        ("nnnn", "nnnn"),  # never yet ready: unready until its first 200
        ("nyn", "nyy"),  # one miss of a ready worker: still ready
        ("ynnn", "yyyn"),  # three in a row: unready
        ("ynnynnyn", "yyyyyyyy"),  # misses not in a row do not add up
        ("ynnnnny", "yyynnny"),  # unready until the next 200
    ],
)
def test_a_worker_that_was_ready_is_unready_after_three_failed_probes_in_a_row(
    answers: str, readiness: str
) -> None:
    """The kubelet's failureThreshold (3, the pods' probe's): a busy worker's one slow answer
    does not make it unready, so up's scale-in does not stop it ahead of an idle one."""
    ready, misses, seen = False, 0, ""
    for answer in answers:
        ready, misses = probed_readiness(ready, misses, answer == "y")
        seen += "y" if ready else "n"
    assert seen == readiness


def test_up_counts_a_running_worker_ready_while_its_readyz_says_so(tmp_path: Path) -> None:
    """``readyReplicas`` of an async endpoint: running workers whose ``/readyz`` answered 200
    (once a second), until three probes in a row fail; a restarted worker is asked again."""
    consuming = threading.Event()
    server = serve_metrics(0, "127.0.0.1", CollectorRegistry(), consuming.is_set)
    try:
        supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 1, "sqlite")), "", 0)  # type: ignore[arg-type]
        document = yaml.safe_load((REPO / "examples" / "abalone" / "async.yaml").read_text())
        endpoint = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
        key = "abalone-async/worker-0"
        endpoint.children[key] = FakeChild(True, key)  # type: ignore[assignment]
        endpoint.metrics_ports[key] = server.server_port
        now = time.monotonic()

        def ready_at(moment: float) -> int:
            asyncio.run(supervisor._probe_workers(endpoint, moment))
            return supervisor._ready(endpoint)

        assert ready_at(now) == 0  # running, not consuming
        consuming.set()
        assert ready_at(now + 0.5) == 0  # not asked again within the second
        assert ready_at(now + 1.0) == 1
        consuming.clear()  # e.g. its broker went away
        assert ready_at(now + 2.0) == 1  # the failure threshold: 3 in a row
        assert ready_at(now + 3.0) == 1
        assert ready_at(now + 4.0) == 0
        consuming.set()
        assert ready_at(now + 5.0) == 1
        endpoint.children[key] = FakeChild(True, key, started_at=now + 5.5)  # type: ignore[assignment]
        assert supervisor._ready(endpoint) == 0  # restarted (the same PID or not): asked again
        assert ready_at(now + 6.0) == 1
        endpoint.children[key].is_running = False  # type: ignore[attr-defined]
        assert supervisor._ready(endpoint) == 0
    finally:
        server.shutdown()
        server.server_close()


class UnreadableQueue:
    def backlog(self, endpoint: str) -> Backlog:
        raise ConnectionRefusedError("the broker is down")


def test_up_keeps_a_pool_whose_queue_cannot_be_read_and_shows_no_figures(tmp_path: Path) -> None:
    """As the operator: the workers stay, the status says BrokerUnreadable with no backlog,
    and the metrics carry no frozen figure but count the failure."""
    registry = CollectorRegistry()
    supervisor = Supervisor(tmp_path, UnreadableQueue(), "amqp://127.0.0.1:1/", 0)  # type: ignore[arg-type]
    supervisor.metrics = OperatorMetrics(registry)
    document = yaml.safe_load((REPO / "examples" / "abalone" / "async.yaml").read_text())
    endpoint = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    endpoint.children["w"] = FakeChild(True, "w")  # type: ignore[assignment]
    endpoint.initialized = True  # a pool its first decision started
    replicas = decided(supervisor, endpoint, time.monotonic())
    supervisor._set_status(endpoint)
    assert replicas == 1 and endpoint.status.reason == "BrokerUnreadable"
    assert endpoint.status.backlog is None
    labels = {"namespace": NAMESPACE, "endpoint": endpoint.name}
    assert registry.get_sample_value("infermodes_async_approximate_backlog_size", labels) is None
    failures = "infermodes_async_backlog_read_failures_total"
    assert registry.get_sample_value(failures, labels) == 1


def test_up_publishes_the_current_queue_figures_of_an_endpoint_that_failed(
    tmp_path: Path,
) -> None:
    """A Failed pool's queue still takes requests: its figures are read on, as the operator
    reads them (not frozen at their last value, nor dropped while requests wait)."""
    registry = CollectorRegistry()
    waiting = Backlog(ready=3, unacked=0, consumers=0, source="amqp+management")
    queue = FixedQueue(waiting)
    supervisor = Supervisor(tmp_path, queue, "amqp://127.0.0.1:1/", 0)  # type: ignore[arg-type]
    supervisor.metrics = OperatorMetrics(registry)
    document = yaml.safe_load((REPO / "examples" / "abalone" / "async.yaml").read_text())
    endpoint = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    decided(supervisor, endpoint, time.monotonic())
    supervisor._set_status(endpoint)
    labels = {"namespace": NAMESPACE, "endpoint": endpoint.name}
    backlog = "infermodes_async_approximate_backlog_size"
    assert registry.get_sample_value(backlog, labels) == 3
    endpoint.failure = ("ModelLoadFailed", "model cannot be loaded")
    queue.found = Backlog(ready=5, unacked=0, consumers=0, source="amqp+management")
    asyncio.run(supervisor._actuate(endpoint, time.monotonic()))
    assert endpoint.status.phase.value == "Failed"
    assert endpoint.status.backlog is not None and endpoint.status.backlog.total == 5
    assert registry.get_sample_value(backlog, labels) == 5
    without_capacity = "infermodes_async_has_backlog_without_capacity"
    assert registry.get_sample_value(without_capacity, labels) == 1


@pytest.mark.parametrize(
    ("example", "held", "wakes", "kept"),
    [("async", 0, True, False), ("serverless", 1, True, True), ("serverless", 0, False, True)],
)
def test_the_local_demand_sink_wakes_the_supervisor_for_a_push_or_a_cold_start(
    tmp_path: Path, example: str, held: int, wakes: bool, kept: bool
) -> None:
    """A push for an async pool at zero starts its worker at once, as a cold start does; the
    queue is an async endpoint's demand, so its entry is not kept."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / f"{example}.yaml").read_text())
    name = document["metadata"]["name"]
    supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    demand = GatewayDemand("gw", 0, held, 9.0, at=9.0)
    asyncio.run(LocalDemandSink(supervisor).write("", name, demand))
    assert supervisor.wake.is_set() is wakes
    assert (name in supervisor.demand) is kept


def test_an_endpoint_whose_processes_cannot_run_fails_alone_and_up_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What no check foresaw, raised while one endpoint is actuated (a NUL in a URI took all
    of ``up`` down before the spec refused it): that endpoint is Failed with the error, and
    the round goes on for the others."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    for name in ("broken", "fine"):
        document = yaml.safe_load((REPO / "examples" / "abalone" / "realtime.yaml").read_text())
        document["metadata"]["name"] = name
        supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    actuated = []

    async def actuate(endpoint: LocalEndpoint, now: float) -> None:
        if endpoint.name == "broken":
            raise ValueError("embedded null byte")
        actuated.append(endpoint.name)

    monkeypatch.setattr(supervisor, "_actuate", actuate)
    for _ in range(2):
        asyncio.run(supervisor.tick())
    assert actuated == ["fine", "fine"]
    status = supervisor.endpoints["broken"].status
    assert (status.phase.value, status.reason) == ("Failed", "ActuationFailed")
    assert status.message == "ValueError: embedded null byte"
    assert sum("cannot run its processes" in e for e in supervisor.endpoints["broken"].events) == 1


def test_a_batch_job_whose_instances_cannot_start_stays_failed_and_up_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real round, with an instance whose start raises: Failed (ActuationFailed) on this
    round and the next (the batch runner does not overwrite it), nothing left running."""
    from infermodes.local import children

    def refuse(self: children.Child, now: float) -> None:
        raise ValueError("embedded null byte")

    monkeypatch.setattr(children.Child, "start", refuse)
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "batch.yaml").read_text())
    endpoint = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    for _ in range(3):
        asyncio.run(supervisor.tick())
        status = endpoint.status
        assert (status.phase.value, status.reason) == ("Failed", "ActuationFailed")
    assert endpoint.children == {} and all(not c.running() for c in supervisor.all_children())


def test_a_job_stopped_while_another_endpoint_is_actuated_starts_no_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop applied during a round (another endpoint's decision awaits) replaces the job:
    the round's old object of it must not start instances nobody would then stop."""
    from infermodes.local import children

    started: list[str] = []
    monkeypatch.setattr(children.Child, "start", lambda self, now: started.append(self.key))
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "batch.yaml").read_text())
    first = {**document, "metadata": {"name": "first"}}
    first["spec"] = {**document["spec"], "batch": {**document["spec"]["batch"], "stop": True}}
    supervisor.apply(parse_document(first, "test"))
    supervisor.apply(parse_document(document, "test"))
    stopped = copy.deepcopy(document)
    stopped["spec"]["batch"]["stop"] = True
    actuate = supervisor._actuate

    async def stop_meanwhile(endpoint: LocalEndpoint, now: float) -> None:
        if endpoint.name == "first":  # as StopTransformJob arriving while this one awaits
            supervisor.apply(parse_document(stopped, "test"))
        await actuate(endpoint, now)

    monkeypatch.setattr(supervisor, "_actuate", stop_meanwhile)
    asyncio.run(supervisor.tick())
    asyncio.run(supervisor.tick())  # the stopped job's first round
    assert started == []
    assert supervisor.endpoints["abalone-batch"].status.phase.value == "Stopped"


def test_a_batch_job_stopped_and_resumed_is_the_same_job_and_a_changed_one_a_new_one(
    tmp_path: Path,
) -> None:
    """Its run id stays through spec.batch.stop, as a CR's UID does, so the resumed job skips
    the outputs it wrote instead of writing every one again; any other change is a new job."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "batch.yaml").read_text())
    supervisor.apply(parse_document(document, "test"))
    first = supervisor._run_id("abalone-batch")
    for stop in (True, False):
        changed = copy.deepcopy(document)
        changed["spec"]["batch"]["stop"] = stop
        supervisor.apply(parse_document(changed, "test"))
        assert supervisor._run_id("abalone-batch") == first
    other = copy.deepcopy(document)
    other["spec"]["batch"]["maxPayloadInMB"] = 5
    supervisor.apply(parse_document(other, "test"))
    assert supervisor._run_id("abalone-batch") not in ("", first)


def test_a_saved_endpoint_this_version_refuses_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state file written by an older version (or damaged) must not keep ``up`` from
    starting; the endpoints beside it load."""
    good = yaml.safe_load((REPO / "examples" / "abalone" / "realtime.yaml").read_text())
    bad = {**good, "metadata": {"name": "old"}}
    bad["spec"] = {**good["spec"], "model": {"uri": "relative/model.tar.gz"}}
    folder = tmp_path / "endpoints"
    folder.mkdir()
    for name, document in (("abalone", good), ("old", bad)):
        saved = {"document": document, "created": "2026-01-01T00:00:00Z"}
        (folder / f"{name}.json").write_text(json.dumps(saved))
    (folder / "damaged.json").write_text("{")
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    supervisor.load_state()
    assert list(supervisor.endpoints) == ["abalone"]
    assert sum("is not loaded" in r.getMessage() for r in caplog.records) == 2


def test_an_endpoint_whose_model_cannot_load_starts_again_after_a_doubling_back_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the kubelet restarts a pod whose model cannot load (a model uploaded after the
    apply): 5 s, then 10, 20, ... up to 5 minutes; the attempts are forgotten once a replica
    is ready again."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "realtime.yaml").read_text())
    name = document["metadata"]["name"]
    supervisor.apply(parse_document(document, "test"))
    assert [supervisor._retry_load_later(name, 100.0) for _ in range(9)] == [
        5, 10, 20, 40, 80, 160, 300, 300, 300
    ]  # fmt: skip
    supervisor.load_retries[name] = (1, 105.0)
    failed = supervisor.endpoints[name]
    failed.failure = ("ModelLoadFailed", "model cannot be loaded: no such object")
    supervisor._retry_loads(104.9)
    assert supervisor.endpoints[name] is failed  # not yet
    supervisor._retry_loads(105.0)
    again = supervisor.endpoints[name]
    assert again is not failed and again.failure is None
    assert "its model could not load 1 time(s) in a row" in again.events[-1]
    supervisor._retry_loads(106.0)
    assert supervisor.load_retries[name] == (1, 105.0)  # running, not ready yet: kept
    monkeypatch.setattr(supervisor, "_ready", lambda endpoint: 1)
    supervisor._retry_loads(107.0)
    assert name not in supervisor.load_retries
    supervisor.load_retries[name] = (2, 0.0)
    supervisor.delete(name)
    assert name not in supervisor.load_retries


def failed_example(tmp_path: Path, mode: str) -> tuple[Supervisor, dict[str, Any], LocalEndpoint]:
    """``up``'s example endpoint of ``mode`` (and its document), its model failed to load."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / f"{mode}.yaml").read_text())
    supervisor.apply(parse_document(document, "test"))
    failed = supervisor.endpoints[document["metadata"]["name"]]
    failed.failure = ("ModelLoadFailed", "model cannot be loaded: no such object")
    return supervisor, document, failed


def test_a_retried_endpoint_that_starts_nothing_stays_failed_and_a_new_spec_backs_off_anew(
    tmp_path: Path,
) -> None:
    """A serverless endpoint at zero applied again by its retry showed InService 5 s after its
    model failed to load, with nothing trying it yet. It stays Failed, naming why, until the
    server its retry starts runs; a changed spec gets its own back-off (5 s again)."""
    supervisor, document, failed = failed_example(tmp_path, "serverless")
    name = failed.name
    supervisor.load_retries[name] = (3, 0.0)
    supervisor._retry_loads(1.0)
    again = supervisor.endpoints[name]
    supervisor._set_status(again)
    assert (again.status.phase.value, again.status.reason) == ("Failed", "ModelLoadFailed")
    assert again.status.message.startswith("model cannot be loaded: no such object; tried again")
    changed = copy.deepcopy(document)
    changed["spec"]["model"]["uri"] = "file:///elsewhere/model.tar.gz"
    supervisor.apply(parse_document(changed, "test"))
    assert name not in supervisor.load_retries
    fresh = supervisor.endpoints[name]
    supervisor._set_status(fresh)  # applied by hand: its own status, not the old failure
    assert (fresh.status.phase.value, fresh.status.reason) == ("Creating", "LoadingModel")


def test_a_retry_of_a_failed_load_keeps_the_time_the_endpoint_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each retry applied the spec again as a new endpoint, whose Ready condition had no time
    yet: DescribeEndpoint's LastModifiedTime moved at every retry of an endpoint that stayed
    Failed for the same reason. It keeps the time the endpoint turned Failed."""
    supervisor, _, failed = failed_example(tmp_path, "realtime")
    name = failed.name
    failed.status = Status(Phase.FAILED, *failed.failure)
    monkeypatch.setattr(time, "time", lambda: 1_000.0)
    before = supervisor.object_of(failed)["status"]["conditions"][0]["lastTransitionTime"]
    supervisor.load_retries[name] = (1, 0.0)
    monkeypatch.setattr(time, "time", lambda: 2_000.0)
    supervisor._retry_loads(1.0)
    again = supervisor.endpoints[name]
    supervisor._set_status(again)
    shown = supervisor.object_of(again)["status"]
    assert (shown["phase"], shown["reason"]) == ("Failed", "ModelLoadFailed")
    assert shown["conditions"][0]["lastTransitionTime"] == before


def retried_after_a_load_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, started: Callable[[str], None]
) -> tuple[Supervisor, LocalEndpoint]:
    """The example endpoint of ``mode`` whose model could not load, applied again by its
    retry and actuated once (``started`` is told each process key it would start)."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / f"{mode}.yaml").read_text())
    name = document["metadata"]["name"]
    supervisor.apply(parse_document(document, "test"))
    supervisor.endpoints[name].failure = ("ModelLoadFailed", "model cannot be loaded: gone")
    supervisor.load_retries[name] = (1, 0.0)
    monkeypatch.setattr(supervisor, "_start", lambda endpoint, child, now: started(child.key))
    supervisor._retry_loads(1.0)
    again = supervisor.endpoints[name]
    asyncio.run(supervisor._actuate(again, 1.0))
    return supervisor, again


def test_a_retried_serverless_endpoint_at_zero_starts_a_server_to_try_its_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed, a serverless endpoint takes no request (the gateway answers 400), so no
    request's demand ever starts the process its retry waits for: once its model was there
    again it stayed Failed until applied again by hand. Its retry starts one server."""
    started: list[str] = []
    supervisor, again = retried_after_a_load_failure(
        tmp_path, monkeypatch, "serverless", started.append
    )
    name = again.name
    assert started == [f"{name}/server-0"]
    assert again.desired == 1
    # running, not ready: still Failed (a waiter for InService must not pass on a mere try),
    # as the operator's status stays while a restarted pod's last exit says the model failed
    monkeypatch.setattr(again.children[f"{name}/server-0"], "running", lambda: True)
    supervisor._set_status(again)
    assert (again.status.phase.value, again.status.reason) == ("Failed", "ModelLoadFailed")


def test_a_retried_realtime_endpoint_is_failed_until_its_server_shows_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A realtime endpoint's retry said Creating (NoReplicaReady) while its server ran, not
    ready, and a serverless one's said Failed: one rule for both, the operator's (Failed while
    the last run could not load the model and nothing is ready), saying it is being tried."""
    supervisor, again = retried_after_a_load_failure(
        tmp_path, monkeypatch, "realtime", lambda key: None
    )
    for child in again.children.values():
        monkeypatch.setattr(child, "running", lambda: True)
    supervisor._set_status(again)
    assert (again.status.phase.value, again.status.reason) == ("Failed", "ModelLoadFailed")
    assert again.status.message == "model cannot be loaded: gone; tried again now"
    monkeypatch.setattr(supervisor, "_ready", lambda endpoint: 1)
    supervisor._set_status(again)
    assert (again.status.phase.value, again.status.reason) == ("InService", "AllReplicasReady")


def test_a_zygote_that_does_not_answer_is_stopped_and_servers_start_by_exec() -> None:
    """A stuck zygote (SIGSTOPped, say) held up's loop, and with it the gateway, while it
    waited for the PID: it gives up (after SPAWN_TIMEOUT_SECONDS) and stops the zygote."""
    zygote = Zygote()
    zygote.proc = subprocess.Popen(["sleep", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True)  # fmt: skip
    zygote.ready = True  # its imports done: it takes requests, and answers none
    try:
        assert zygote.spawn({}, "/dev/null") is None
        assert zygote.proc is None  # stopped: the next servers start by exec
    finally:
        if zygote.proc is not None:
            zygote.proc.kill()
            zygote.proc.wait()


@pytest.mark.parametrize(
    ("written", "named"),
    [
        ("minReplicas: '1'", "spec.realtime.minReplicas: Input should be a valid integer"),
        ("workers: true", "spec.realtime.workers: Input should be a valid integer"),
        ("scaling: {target: '2'}", "spec.realtime.scaling.target: Input should be a valid number"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_refused_as_kubectl_refuses_it(
    written: str, named: str
) -> None:
    """The CRD's schema refuses a string or a boolean where it wants a number; pydantic alone
    took '1' and true for 1, so a file that ran under up was refused by kubectl apply."""
    text = GOOD.replace("realtime: {}", f"realtime: {{{written}}}")
    with pytest.raises(ManifestError) as caught:
        parse_text(text, "ep.yaml")
    assert f"ep.yaml document 1 (abalone): {named}" in str(caught.value)


def test_a_billion_laughs_is_refused_naming_the_aliasing_before_it_is_expanded() -> None:
    """Nine levels of aliases made apply and up -f grow to gigabytes expanding them (as_json);
    the count stops at the bound, having met each written node once."""
    with pytest.raises(ManifestError) as caught:
        parse_text(laughs(9, GOOD), "laughs.yaml")
    assert str(caught.value).startswith(
        "laughs.yaml document 1: document contains excessive aliasing: its aliases expand to "
        f"over {MAX_ALIASED_NODES} nodes"
    )
    hooked = "apiVersion: infermodes.dev/v1alpha1\nspec: &s {again: *s}\n"
    with pytest.raises(ManifestError, match="ep.yaml document 2: an alias inside its own anchor"):
        parse_text(GOOD + "---\n" + hooked, "ep.yaml")


def test_aliases_are_refused_by_the_nodes_they_add_past_the_bound_not_one_before() -> None:
    at_bound = yaml.compose(f"a: &a [{', '.join(['x'] * (MAX_ALIASED_NODES - 1))}]\nb: *a\n")
    assert aliased_nodes(at_bound) == MAX_ALIASED_NODES  # the list and its items
    past = yaml.compose(f"a: &a [{', '.join(['x'] * MAX_ALIASED_NODES)}]\nb: *a\n")
    with pytest.raises(ExcessiveAliasing, match="excessive aliasing"):
        aliased_nodes(past)
    assert aliased_nodes(yaml.compose(GOOD)) == 0


@pytest.mark.parametrize("levels", [500, 5000])
def test_a_manifest_nested_too_deeply_is_refused_naming_it(levels: int) -> None:
    """The YAML parser recurses per level: 500 nested lists (1 KB) raised RecursionError, a
    traceback from apply and up -f and a 500 from up's API."""
    text = GOOD.replace("realtime: {}", f"realtime: {{x: {'[' * levels}{']' * levels}}}")
    with pytest.raises(ManifestError) as caught:
        parse_text(text, "deep.yaml")
    assert str(caught.value).startswith("deep.yaml: nested too deeply to read")


def test_a_manifest_with_a_few_ordinary_aliases_is_taken() -> None:
    text = GOOD.replace(
        "metadata: {name: abalone}",
        "metadata: {name: abalone, labels: &l {app: abalone}, annotations: *l}",
    ).replace("realtime: {}", "realtime: &r {minReplicas: 2, maxReplicas: 2}\n  x: *r")
    with pytest.raises(ManifestError, match="spec.x"):  # an alias is read as the value it names
        parse_text(text, "ep.yaml")
    (manifest,) = parse_text(text.replace("  x: *r\n", ""), "ep.yaml")
    assert manifest.spec.realtime is not None and manifest.spec.realtime.min_replicas == 2


LONG_KEY = "k" * 999


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (GOOD.replace("mode: realtime", "mode: async\n  mode: realtime"),
         'document 2: mapping key "mode" already defined at line 13 (again at line 14)'),
        (GOOD.replace("realtime: {}", "realtime: {minReplicas: 1, minReplicas: 2}"),
         'document 2: mapping key "minReplicas" already defined at line 15 (again at line 15)'),
        (GOOD + "metadata: {name: other}\n",
         'document 2: mapping key "metadata" already defined at line 11 (again at line 16)'),
        # one key in the JSON a cluster gets (the last won), and a long key cut short
        (GOOD.replace("{name: abalone}", "{name: abalone, labels: {1: a, '1': b}}"),
         'document 2: mapping key "1" already defined at line 11 (again at line 11, written 1 '
         "and '1')"),
        # one key in the mapping built here, two in JSON ("1", "true"): the last won silently
        (GOOD.replace("{name: abalone}", "{name: abalone, labels: {1: a, true: b}}"),
         'document 2: mapping key "true" already defined at line 11 (again at line 11, written '
         "1 and True)"),
        (GOOD.replace("{name: abalone}", "{name: abalone, labels: {1: a, 1.0: b}}"),
         'document 2: mapping key "1" already defined at line 11 (again at line 11, written '
         "1 and 1.0)"),
        (GOOD.replace("{name: abalone}",
                      "{name: abalone, labels: {" + LONG_KEY + ": a, " + LONG_KEY + ": b}}"),
         f'document 2: mapping key "{"k" * 60}..." (999 characters) already defined at line 11 '
         "(again at line 11): keep one of them"),
    ],
)  # fmt: skip
def test_a_key_given_twice_is_refused_naming_both_lines_as_kubectl_does(
    text: str, said: str
) -> None:
    """The last one won without a word: a careless merge turned async into realtime. The
    lines are the file's (the second document starts on line 9)."""
    with pytest.raises(ManifestError) as caught:
        parse_text(GOOD + "---\n" + text, "ep.yaml")
    assert str(caught.value).startswith(f"ep.yaml {said}"), caught.value


def test_keys_json_spells_apart_are_two_keys_as_kubectl_sends_them() -> None:
    """``true`` is ``"true"`` in the JSON kubectl sends, not ``"True"``: both are kept."""
    text = GOOD.replace("{name: abalone}", "{name: abalone, labels: {true: a, 'True': b}}")
    (manifest,) = parse_text(text, "ep.yaml")
    assert manifest.document["metadata"]["name"] == "abalone"


def test_a_key_merged_in_with_an_alias_may_be_overridden() -> None:
    text = GOOD.replace(
        "metadata: {name: abalone}",
        "metadata: {name: abalone, labels: &l {app: a, tier: a}, annotations: {<<: *l, tier: b}}",
    )
    (manifest,) = parse_text(text, "ep.yaml")
    assert manifest.name == "abalone"


def test_an_integral_float_is_an_integer_as_for_the_api_server() -> None:
    (manifest,) = parse_text(GOOD.replace("realtime: {}", "realtime: {minReplicas: 2.0}"), "e")
    assert manifest.spec.realtime is not None and manifest.spec.realtime.min_replicas == 2


def test_the_platform_apis_variant_reaches_the_gateways_table_and_outlives_a_restart(
    tmp_path: Path,
) -> None:
    """The gateway refuses an InvokeEndpoint TargetVariant the endpoint does not have: under
    up its table gets the API's variant from the supervisor's object, after a restart too, and
    an endpoint a manifest replaced is no longer the API's (no variant)."""
    from infermodes.local.platform_store import LocalPlatformStore
    from infermodes.platform.translate import VARIANT_ANNOTATION, Defaults, endpoint_object

    variant = {"VariantName": "Blue", "ModelName": "m",
               "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2}}  # fmt: skip
    config = {"EndpointConfigName": "cfg", "ProductionVariants": [variant]}
    model = {"ModelName": "m", "PrimaryContainer": {"ModelDataUrl": "file:///m.tar.gz"}}
    obj = endpoint_object("ep", config, model, Defaults(file_uris=True))
    queue = FixedQueue(Backlog(ready=0, unacked=0, consumers=0, source="sqlite"))
    supervisor = Supervisor(tmp_path, queue, "", 0)  # type: ignore[arg-type]
    asyncio.run(LocalPlatformStore(tmp_path, supervisor).create_endpoint(obj))
    shown = supervisor.object_of(supervisor.endpoints["ep"], with_processes=False)
    assert shown["metadata"]["annotations"] == {VARIANT_ANNOTATION: "Blue"}
    restarted = Supervisor(tmp_path, queue, "", 0)  # type: ignore[arg-type]
    restarted.load_state()
    LocalPlatformStore(tmp_path, restarted)
    assert restarted.endpoints["ep"].annotations == {VARIANT_ANNOTATION: "Blue"}
    document = copy.deepcopy(restarted.endpoints["ep"].manifest.document)
    document["spec"]["serverless"]["maxConcurrency"] = 3
    restarted.apply(parse_document(document, "a manifest"))
    assert restarted.endpoints["ep"].annotations == {}


def test_notifications_under_rabbitmq_name_the_exchange_to_bind() -> None:
    """Under --broker-url the CLI answered "bind a queue to its notification exchange",
    naming neither the exchange nor the routing keys to bind with."""

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from infermodes.local.api import create_router
    from infermodes.local.supervisor import Supervisor

    app = FastAPI()
    # the route reads neither
    app.include_router(create_router(cast(Supervisor, None), None, no_owner))
    answer = TestClient(app).get("/_infermodes/notifications", params={"topic": "abalone.*"})
    assert answer.status_code == 400
    message = answer.json()["message"]
    assert "exchange infermodes.notifications" in message
    assert "<endpoint>.success" in message and "<endpoint>.error" in message


def test_a_restart_shows_what_is_true_before_any_process_of_it_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a restart of up, a serverless endpoint whose model could not load showed
    InService (at zero) until a request found out again, and a realtime one that served showed
    Creating; and until the first round, every endpoint showed Creating. The saved file says
    which served and which failed; the API's first answer waits for the first round."""
    from infermodes.gateway.table import Table

    queue = FixedQueue(Backlog(0, 0, 0, "sqlite"))
    supervisor = Supervisor(tmp_path, queue, "", 0)  # type: ignore[arg-type]
    for mode in ("realtime", "serverless"):
        document = yaml.safe_load((REPO / "examples" / "abalone" / f"{mode}.yaml").read_text())
        supervisor.apply(parse_document(document, "test"))
    supervisor.endpoints["abalone"].served = True
    failure = ("ModelLoadFailed", "model cannot be loaded: no such object")
    supervisor.endpoints["abalone-serverless"].failure = failure

    async def nothing_runs(endpoint: LocalEndpoint, now: float) -> None:
        return None

    monkeypatch.setattr(supervisor, "_actuate", nothing_runs)
    asyncio.run(supervisor.tick())  # what the round saw is saved

    restarted = Supervisor(tmp_path, queue, "", 0)  # type: ignore[arg-type]
    restarted.load_state()
    started: list[str] = []
    monkeypatch.setattr(restarted, "_start", lambda endpoint, child, now: started.append(child.key))
    monkeypatch.setattr(restarted, "_decide", lambda endpoint, now, metrics: asyncio.sleep(0, 1))
    shown: dict[str, tuple[str, str]] = {}

    async def first_answer() -> None:
        task = asyncio.create_task(restarted.run(Table()))
        await restarted.looked()  # what the API awaits before it answers
        for name, endpoint in restarted.endpoints.items():
            shown[name] = (endpoint.status.phase.value, endpoint.status.reason)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(first_answer())
    assert shown == {"abalone": ("Updating", "RollingOut"),
                     "abalone-serverless": ("Failed", "ModelLoadFailed")}  # fmt: skip
    # and the serverless one's model is tried at once: it may be there now
    assert "abalone-serverless/server-0" in started


def test_a_restart_mid_failed_update_brings_the_previous_spec_back_without_its_failure(
    tmp_path: Path,
) -> None:
    """The saved model-load failure is the spec applied last's: given to the previous spec a
    restart brings back to serve, it made that spec's starting servers Failed, the spec applied
    last rolled over from them at once, and a server of the two that served was lost."""
    document = yaml.safe_load((REPO / "examples" / "abalone" / "realtime.yaml").read_text())
    broken = copy.deepcopy(document)
    broken["spec"]["model"]["uri"] = "file:///nowhere/model.tar.gz"
    failure = ["ModelLoadFailed", "model cannot be loaded: no such file"]
    saved = {"document": broken, "previous": document, "created": "2026-12-06T00:00:00Z",
             "served": True, "loadFailure": failure}  # fmt: skip
    (tmp_path / "endpoints").mkdir()
    (tmp_path / "endpoints" / "abalone.json").write_text(json.dumps(saved))
    restarted = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    restarted.load_state()
    back = restarted.endpoints["abalone"]
    # saved before namespaces were kept: in none until an apply names one, shown as default
    assert back.manifest.document == document
    assert restarted.shown(back)["metadata"]["namespace"] == "default"
    assert back.load_failure is None
    assert restarted.resumed["abalone"].document == broken


def test_an_endpoint_saved_before_namespaces_were_kept_takes_that_of_its_next_apply(
    tmp_path: Path,
) -> None:
    """The earlier release kept no namespace and told its users to write ``namespace: local``
    (or none): its state's endpoints were placed in ``default`` at load, so that unchanged
    file, applied again, was refused as the name taken in another namespace (a 409 from
    ``apply``, ``up -f`` not starting). The first apply of its name places it."""
    document = yaml.safe_load((REPO / "examples" / "abalone" / "realtime.yaml").read_text())
    saved = {"document": document, "created": "2026-12-06T00:00:00Z", "served": True}
    (tmp_path / "endpoints").mkdir()
    (tmp_path / "endpoints" / "abalone.json").write_text(json.dumps(saved))
    restarted = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    restarted.load_state()
    in_local = {**document, "metadata": {"name": "abalone", "namespace": "local"}}
    placed = restarted.placed(parse_document(in_local, "realtime.yaml"))
    assert placed.namespace == "local"
    restarted.endpoints["abalone"].manifest = placed  # as apply keeps it
    elsewhere = {**document, "metadata": {"name": "abalone", "namespace": "prod"}}
    with pytest.raises(NameTaken, match="exists in namespace 'local', not 'prod'"):
        restarted.placed(parse_document(elsewhere, "realtime.yaml"))


SECRET = """\
apiVersion: v1
kind: Secret
metadata: {name: infermodes-s3}
stringData: {AWS_SECRET_ACCESS_KEY: do-not-show-me}
---
"""


def test_a_secret_beside_an_endpoint_is_skipped_naming_it_never_its_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file a cluster takes whole (a Secret for spec.storageSecretRef, then the endpoint)
    was refused by up as a whole, saying only that the kind must be InferenceEndpoint. up has
    no Secrets: it skips the Secret with a warning naming the document and what to do, and
    applies the endpoint; the Secret's data is in no message. Another kind is refused saying
    what to do."""

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from infermodes.local.api import create_router

    path = tmp_path / "ep.yaml"
    path.write_text(SECRET + GOOD)
    (manifest,) = load_paths([path])
    assert manifest.name == "abalone"
    (warning,) = [r.getMessage() for r in caplog.records if "Secret" in r.getMessage()]
    assert f"{path} document 1: Secret 'infermodes-s3' skipped" in warning
    assert "export them before starting up" in warning and "do-not-show-me" not in warning

    class Applying:
        def placed(self, manifest: Manifest) -> Manifest:
            return manifest

        def apply(self, manifest: object) -> str:
            return "created"

    app = FastAPI()
    app.include_router(create_router(cast(Supervisor, Applying()), None, no_owner))
    answer = TestClient(app).post("/_infermodes/endpoints", content=SECRET + GOOD)
    assert answer.json()["applied"] == [{"name": "abalone", "result": "created"}]
    (skipped,) = answer.json()["skipped"]
    assert "Secret 'infermodes-s3' skipped" in skipped and "do-not-show-me" not in answer.text

    config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n" + GOOD
    with pytest.raises(ManifestError) as refused:
        parse_text(config_map, "ep.yaml")
    assert "document 1" in str(refused.value) and "apply other kinds" in str(refused.value)


def test_deleting_an_async_endpoint_says_how_many_accepted_requests_its_queue_keeps(
    tmp_path: Path,
) -> None:
    """Deleting an async endpoint under up keeps its queue (as on a cluster): the requests
    accepted (202) and not yet taken wait for an endpoint of that name. The delete said only
    "deleted", so they looked lost; it now says how many wait (None: the queue is unreadable)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from infermodes.local.api import create_router

    queue = FixedQueue(Backlog(ready=3, unacked=1, consumers=0, source="sqlite"))
    supervisor = Supervisor(tmp_path, queue, "", 0)  # type: ignore[arg-type]
    for mode in ("async", "realtime"):
        document = yaml.safe_load((REPO / "examples" / "abalone" / f"{mode}.yaml").read_text())
        supervisor.apply(parse_document(document, "test"))
    app = FastAPI()
    app.include_router(create_router(supervisor, None, no_owner))
    client = TestClient(app)
    answer = client.delete("/_infermodes/endpoints/abalone-async").json()
    assert answer == {"deleted": "abalone-async", "waiting": 3}
    assert client.delete("/_infermodes/endpoints/abalone").json()["waiting"] == 0


def test_the_zygote_goes_with_the_last_serverless_endpoint_and_comes_back_with_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/local.md: the zygote costs a resident process while any serverless endpoint
    exists. It stayed after the last one was deleted, until up stopped."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]

    async def nothing_runs(endpoint: LocalEndpoint, now: float) -> None:
        return None

    monkeypatch.setattr(supervisor, "_actuate", nothing_runs)
    document = yaml.safe_load((REPO / "examples" / "abalone" / "serverless.yaml").read_text())

    async def rounds() -> None:
        supervisor.apply(parse_document(document, "test"))
        await supervisor.tick()
        first = supervisor.zygote.proc
        assert first is not None and first.poll() is None
        supervisor.delete(document["metadata"]["name"])
        await supervisor.tick()
        assert supervisor.zygote.proc is None and first.poll() is not None  # ended, reaped
        supervisor.apply(parse_document(document, "test"))
        await supervisor.tick()
        again = supervisor.zygote.proc
        assert again is not None and again.poll() is None and again.pid != first.pid
        supervisor.stop_all()

    asyncio.run(rounds())


def test_a_fixed_spec_keeps_the_servers_of_the_spec_before_a_failed_update_during_its_retry(
    tmp_path: Path,
) -> None:
    """A realtime update whose model cannot load leaves the previous spec's three servers
    serving; a fixed spec rolls over from them and keeps three. Applied while the broken
    spec's retry ran (its one server trying the model, ``failure`` cleared for it), the fixed
    spec took that one retry server's count for the capacity and went down to its minimum."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "realtime.yaml").read_text())
    document["spec"]["realtime"].update(minReplicas=1, maxReplicas=4)
    name = document["metadata"]["name"]
    supervisor.apply(parse_document(document, "test"))
    serving = supervisor.endpoints[name]
    serving.initialized, serving.desired = True, 3
    serving.children = {f"{name}/server-{i}": cast(Any, object()) for i in range(3)}
    broken, fixed = copy.deepcopy(document), copy.deepcopy(document)
    broken["spec"]["model"]["uri"] = "file:///nowhere/model.tar.gz"
    fixed["spec"]["model"]["uri"] = "file:///mended/model.tar.gz"
    supervisor.apply(parse_document(broken, "test"))
    failing = supervisor.endpoints[name]
    assert len(failing.outgoing) == 3 and failing.carried == 3
    # its retry: the failure cleared for one server to try the model, which wants one
    failing.initialized, failing.desired = True, 1
    failing.load_failure = ("ModelLoadFailed", "model cannot be loaded: no such file")
    failing.children = {f"{name}/server-9": cast(Any, object())}
    supervisor.apply(parse_document(fixed, "test"))
    assert supervisor.endpoints[name].carried == 3


def test_a_realtime_spec_over_a_serverless_endpoint_at_zero_is_updating_at_once(
    tmp_path: Path,
) -> None:
    """Nothing of the old spec serves at zero, so no server rolls over: the new endpoint said
    Creating until the next round's decision, and a request sent in between was refused (400)
    instead of held for the new replica."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    serverless = yaml.safe_load((REPO / "examples" / "abalone" / "serverless.yaml").read_text())
    realtime = yaml.safe_load((REPO / "examples" / "abalone" / "realtime.yaml").read_text())
    realtime["metadata"]["name"] = name = serverless["metadata"]["name"]
    supervisor.apply(parse_document(serverless, "test"))
    loaded = supervisor.endpoints[name]
    loaded.memory.loaded_template = replica_template(loaded.manifest.spec)  # loaded once
    supervisor._set_status(loaded)
    assert loaded.status.reason == "ScaledToZero"
    supervisor.apply(parse_document(realtime, "test"))
    status = supervisor.endpoints[name].status
    assert (status.phase.value, status.reason) == ("Updating", "RollingOut")


@pytest.mark.parametrize("running", [True, False])
def test_a_serverless_cold_start_says_scaling_until_its_replica_is_ready(
    tmp_path: Path, running: bool
) -> None:
    """While a cold start's server loads (or waits out its back-off after a crash), up said
    InService ``Ready`` with 0 of 1 replicas ready (``ScaledToZero`` when no process ran),
    where the operator says ``Scaling`` while replicas start (README: "A serverless
    endpoint"): ScaledToZero is for no replica wanted."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "serverless.yaml").read_text())
    name = document["metadata"]["name"]
    supervisor.apply(parse_document(document, "test"))
    endpoint = supervisor.endpoints[name]
    endpoint.memory.loaded_template = replica_template(
        endpoint.manifest.spec
    )  # its model loaded once
    supervisor._set_status(endpoint)
    assert endpoint.status.reason == "ScaledToZero"
    endpoint.desired = 1
    endpoint.children["server-0"] = FakeChild(running, "server-0")  # type: ignore[assignment]
    supervisor._set_status(endpoint)
    status = endpoint.status
    expected = ("InService", "Scaling", "0/1 replicas ready")
    assert (status.phase.value, status.reason, status.message) == expected


def actuated_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, document: dict[str, Any]
) -> tuple[Supervisor, LocalEndpoint]:
    """A supervisor with ``document`` applied and actuated once, starting no process."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    supervisor.apply(parse_document(document, "test"))
    monkeypatch.setattr(supervisor, "_start", lambda endpoint, child, now: None)
    endpoint = supervisor.endpoints[document["metadata"]["name"]]
    asyncio.run(supervisor._actuate(endpoint, 1.0))
    return supervisor, endpoint


def test_up_loads_a_serverless_template_once_by_the_operators_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """r62 D2 under up: a new serverless endpoint said InService at zero with a model never
    loaded. Creating (LoadingModel) with one server wanted until one is ready; InService then,
    and at zero at once; a change of scaling alone loads nothing again, a new model does
    (Updating, the endpoint having served)."""
    document = yaml.safe_load((REPO / "examples" / "abalone" / "serverless.yaml").read_text())
    name = document["metadata"]["name"]
    supervisor, endpoint = actuated_once(tmp_path, monkeypatch, document)
    assert endpoint.desired == 1
    status = endpoint.status
    assert (status.phase.value, status.reason) == ("Creating", "LoadingModel")
    assert status.message == (
        "one replica loads the model before the endpoint takes requests (0/1 replicas ready)"
    )
    monkeypatch.setattr(supervisor, "_ready", lambda endpoint: 1)
    supervisor._set_status(endpoint)
    assert (endpoint.status.phase.value, endpoint.status.reason) == (
        "InService",
        "AllReplicasReady",
    )
    monkeypatch.setattr(supervisor, "_ready", lambda endpoint: 0)
    asyncio.run(supervisor._actuate(endpoint, 2.0))
    assert endpoint.desired == 0  # no request asked for it: at once, not after 300 s idle
    assert (endpoint.status.phase.value, endpoint.status.reason) == ("InService", "ScaledToZero")
    scaled = copy.deepcopy(document)
    scaled["spec"]["serverless"]["maxConcurrency"] = 3
    assert supervisor.apply(parse_document(scaled, "test")) == "configured"
    asyncio.run(supervisor._actuate(supervisor.endpoints[name], 3.0))
    assert (supervisor.endpoints[name].desired, supervisor.endpoints[name].status.reason) == (
        0, "ScaledToZero"
    )  # fmt: skip
    remodelled = copy.deepcopy(scaled)
    remodelled["spec"]["model"]["uri"] = "file:///elsewhere/model.tar.gz"
    supervisor.apply(parse_document(remodelled, "test"))
    changed = supervisor.endpoints[name]
    asyncio.run(supervisor._actuate(changed, 4.0))
    assert changed.desired == 1
    assert (changed.status.phase.value, changed.status.reason) == ("Updating", "LoadingModel")


def test_a_realtime_endpoint_is_creating_until_every_replica_it_starts_with_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """up said InService at the first of three replicas ready (DescribeEndpoint: InService,
    CurrentInstanceCount 1 of 3, and boto3's waiter passed), where the operator says Creating
    until every wanted replica is, as the platform does until the initial instances are up."""
    document = yaml.safe_load((REPO / "examples" / "abalone" / "realtime.yaml").read_text())
    document["spec"]["realtime"] |= {"minReplicas": 1, "maxReplicas": 5, "initialReplicas": 3}
    supervisor, endpoint = actuated_once(tmp_path, monkeypatch, document)
    assert endpoint.desired == 3
    monkeypatch.setattr(supervisor, "_ready", lambda endpoint: 1)
    supervisor._set_status(endpoint)
    assert (endpoint.status.phase.value, endpoint.status.ready_replicas) == ("Creating", 1)
    assert endpoint.status.message == "1/3 replicas ready"
    monkeypatch.setattr(supervisor, "_ready", lambda endpoint: 3)
    supervisor._set_status(endpoint)
    shown = (endpoint.status.phase.value, endpoint.status.reason)
    assert shown == ("InService", "AllReplicasReady")
    monkeypatch.setattr(supervisor, "_ready", lambda endpoint: 2)  # one lost once served
    supervisor._set_status(endpoint)
    assert (endpoint.status.phase.value, endpoint.status.reason) == ("InService", "Scaling")


def test_a_child_not_yet_leading_its_own_process_group_is_still_stopped(tmp_path: Path) -> None:
    """A server the zygote forks is in the zygote's process group until its ``setsid``. Stopped
    in between (deleted right after its cold start), neither its SIGTERM nor, past the grace,
    its SIGKILL reached it: both went to a group that did not exist. The wait then raised out
    of up's loop, which stopped up and every endpoint (seen with a server stopped before its
    ``setsid``). Here: a process in this test's group."""
    proc = subprocess.Popen(["sleep", "60"])  # no session of its own, as such a server
    child = Child("e/server-0", ProcessPlan(("sleep",)), tmp_path / "log", proc=proc)
    try:
        child.stop()
        child.reap(grace=30.0)
        assert proc.returncode == -signal.SIGTERM  # asked to stop, and it did
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Unkillable:
    """A process SIGKILL does not end in time (in uninterruptible I/O: a hung network mount
    it reads a model from): running, and every wait times out."""

    pid = 2**22 + 1  # above pid_max's default: no process of that group or id is signalled
    returncode = None

    def poll(self) -> int | None:
        return None

    def wait(self, timeout: float | None = None) -> int:
        raise subprocess.TimeoutExpired("unkillable", timeout or 0.0)


def test_a_child_that_outlives_its_sigkill_does_not_stop_up(tmp_path: Path) -> None:
    """Past its grace a retiring child is SIGKILLed and waited for; one still there (in
    uninterruptible I/O) raised TimeoutExpired out of up's loop, which stopped up and every
    endpoint. It is left to the kernel now (``reap_adopted`` collects it when it ends)."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    child = Child("e/server-0", ProcessPlan(("sleep",)), tmp_path / "log", proc=Unkillable())
    supervisor.retiring.append((child, time.monotonic() - 1.0))  # past its grace
    supervisor._reap()
    assert supervisor.retiring == []


def test_an_update_whose_server_keeps_crashing_says_so_while_the_old_ones_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serverless spec change whose new server keeps crashing, while the previous spec's
    warm server serves: up said Updating, reason Updating, with nothing on why the update
    never ends; the operator says Updating, ContainerCrashing, that the new spec cannot roll
    out and how many old replicas serve."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "serverless.yaml").read_text())
    name = document["metadata"]["name"]
    supervisor.apply(parse_document(document, "test"))
    endpoint = supervisor.endpoints[name]
    old, new = FakeChild(True, "old"), FakeChild(True, "new")
    new.exits, new.last_exit, new.log_path = 3, 1, tmp_path / "new.log"  # type: ignore[attr-defined]
    endpoint.outgoing["old"] = old  # type: ignore[assignment]
    endpoint.children["new"] = new  # type: ignore[assignment]
    endpoint.ports = {"old": 1, "new": 2}
    endpoint.desired = 1
    monkeypatch.setattr(supervisor, "_is_ready", lambda endpoint, child: child is old)
    supervisor._set_status(endpoint)
    status = endpoint.status
    assert (status.phase.value, status.reason) == ("Updating", "ContainerCrashing")
    assert status.message.startswith("the new spec cannot roll out (process new keeps crashing")
    assert "1 replica(s) of the previous spec still serve" in status.message


def test_an_update_that_cannot_load_shows_its_failure_between_its_retries_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a realtime update's model cannot load, the previous spec's server serves. Its
    retry started a new server under the reason ``Updating`` until that one failed again, so
    DescribeEndpoint's FailureReason went away for seconds at each retry and an UpdateEndpoint
    sent then was refused as in progress. The failure is the status at every step now: the
    failed try, the retry's apply, its first round, its server running and not ready yet."""
    from infermodes.platform.describe import update_failed

    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "realtime.yaml").read_text())
    name = document["metadata"]["name"]
    supervisor.apply(parse_document(document, "test"))
    serving = supervisor.endpoints[name]
    old = FakeChild(True, f"{name}/server-0")
    serving.children, serving.ports = {old.key: old}, {old.key: 1}  # type: ignore[dict-item]
    serving.initialized, serving.desired = True, 1
    serving.status = Status(Phase.IN_SERVICE, "Ready", "", 1, 1, 1)
    monkeypatch.setattr(supervisor, "_is_ready", lambda endpoint, child: child is old)
    monkeypatch.setattr(supervisor, "_start", lambda endpoint, child, now: None)
    broken = copy.deepcopy(document)
    broken["spec"]["model"]["uri"] = "file:///nowhere/model.tar.gz"
    supervisor.apply(parse_document(broken, "test"))
    failing = supervisor.endpoints[name]
    failing.failure = ("ModelLoadFailed", "model cannot be loaded: no such file")
    supervisor.load_retries[name] = (1, 5.0)
    asyncio.run(supervisor._actuate(failing, 1.0))
    shown = []

    def look(endpoint: LocalEndpoint) -> None:
        obj = supervisor.object_of(endpoint, with_processes=False)
        status = endpoint.status
        shown.append((status.phase.value, status.reason, status.ready_replicas))
        assert update_failed(obj), obj["status"]
        assert status.message.startswith(
            "the new spec cannot roll out (model cannot be loaded: no such file); 1 replica(s)"
        ), status.message

    look(failing)
    supervisor._retry_loads(5.0)
    again = supervisor.endpoints[name]
    assert again is not failing and old.key in again.outgoing
    look(again)  # applied again, before its first round
    asyncio.run(supervisor._actuate(again, 5.0))
    look(again)  # its server to be started
    for child in again.children.values():
        monkeypatch.setattr(child, "running", lambda: True)
    supervisor._set_status(again)
    look(again)  # its server running, its model not loaded yet
    assert set(shown) == {("Updating", "ModelLoadFailed", 1)}
    monkeypatch.setattr(supervisor, "_is_ready", lambda endpoint, child: True)
    supervisor._set_status(again)  # its model there now: it rolls out
    assert (again.status.phase.value, again.status.reason) == ("Updating", "RollingOut")
    assert again.load_failure is None


@pytest.mark.parametrize("mode", ["realtime", "serverless"])
def test_an_endpoint_is_in_the_gateways_table_from_its_apply_on(tmp_path: Path, mode: str) -> None:
    """The table heard of a new endpoint at the next round only: an InvokeEndpoint sent right
    after CreateEndpoint was told the endpoint does not exist (404) while DescribeEndpoint
    said Creating. It is told it is Creating now, without the namespace that up alone has."""
    from infermodes.gateway.errors import ValidationError
    from infermodes.gateway.table import Table

    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    supervisor.table = Table(namespaced=False)
    document = yaml.safe_load((REPO / "examples" / "abalone" / f"{mode}.yaml").read_text())
    name = document["metadata"]["name"]
    assert supervisor.apply(parse_document(document, "test")) == "created"
    with pytest.raises(ValidationError) as refused:
        supervisor.table.lookup(name).check_servable()
    assert str(refused.value) == f"endpoint {name} is Creating (Starting), not InService"
    assert refused.value.status_code == 400


class StoppingChild(FakeChild):
    def stop(self) -> None:
        self.is_running = False


@pytest.mark.parametrize("example", ["realtime.yaml", "serverless.yaml"])
def test_a_stopped_model_server_has_past_the_invocation_timeout_to_finish(
    tmp_path: Path, example: str
) -> None:
    """A model server stopped under up (deleted, scaled in, rolled over) is SIGKILLed after its
    grace: it was 10 s, while the gateway lets an invocation run 60 s, so a long one it still
    served was cut; it is the pods' grace now (the invocation timeout plus 10 s) for both."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / example).read_text())
    supervisor.apply(parse_document(document, "test"))
    endpoint = supervisor.endpoints[document["metadata"]["name"]]
    endpoint.children["server-0"] = StoppingChild(True, "server-0")  # type: ignore[assignment]
    endpoint.outgoing["server-old"] = StoppingChild(True, "server-old")  # type: ignore[assignment]
    before = time.monotonic()
    assert supervisor.delete(endpoint.name)
    deadlines = [deadline - before for _, deadline in supervisor.retiring]
    assert len(deadlines) == 2
    assert all(grace > GATEWAY_INVOCATION_TIMEOUT_SECONDS for grace in deadlines), deadlines


def test_a_child_that_outlives_its_sigkill_does_not_stop_ups_shutdown(tmp_path: Path) -> None:
    """At up's stop the same child raised TimeoutExpired out of ``stop_all``: the children
    after it were not reaped and the registry kept them. It is left to the kernel there too."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    stuck = Child("e/server-0", ProcessPlan(("sleep",)), tmp_path / "log", proc=Unkillable())
    supervisor.retiring.append((stuck, time.monotonic() + 60.0))
    supervisor.stop_all(grace=0.0)
    assert supervisor.registry.saved == set()  # reached: the stop went on past the stuck one


def example(mode: str, **block: Any) -> Manifest:
    """The example manifest of ``mode`` with ``block`` merged into its mode's block."""
    document = yaml.safe_load((REPO / "examples" / "abalone" / f"{mode}.yaml").read_text())
    document["spec"][mode].update(block)
    return parse_document(document, f"the {mode} example")


@pytest.mark.parametrize(
    ("mode", "changed", "kept"),
    [
        ("realtime", {"minReplicas": 2, "maxReplicas": 5}, True),
        ("realtime", {"scaling": {"target": 9}}, True),
        ("realtime", {"workers": 3}, False),
        ("serverless", {"maxConcurrency": 7}, True),
        ("serverless", {"memorySizeInMB": 4096}, False),
        ("async", {"maxReplicas": 9, "scaleInCooldownSeconds": 5}, True),
        ("async", {"maxConcurrentInvocationsPerInstance": 2}, False),
        ("batch", {"instanceCount": 3}, False),
    ],
)
def test_a_change_keeps_the_processes_only_when_they_would_run_as_before(
    mode: str, changed: dict[str, Any], kept: bool
) -> None:
    old = LocalEndpoint(example(mode), "now")
    assert runs_as_before(old, example(mode, **changed)) is kept
    assert runs_as_before(old, example(mode)) is (mode != "batch")


def test_a_failed_endpoint_or_one_still_rolling_over_is_replaced_whatever_changed() -> None:
    failed = LocalEndpoint(example("realtime"), "now", failure=("ModelLoadFailed", "no model"))
    rolling = LocalEndpoint(example("realtime"), "now", previous={"spec": {}})
    serverless = LocalEndpoint(example("serverless"), "now")
    for old in (failed, rolling):
        assert not runs_as_before(old, example("realtime", maxReplicas=5))
    assert not runs_as_before(serverless, example("realtime"))


def test_a_stopped_api_job_holds_its_output_until_its_instances_have_exited(
    tmp_path: Path,
) -> None:
    """StopTransformJob's job shows Stopped at once, while its instances still unwind and
    write their summaries under the output path: the next job on that path waits for them."""
    from infermodes.platform.translate import KIND_LABEL, TRANSFORM_JOB

    class Exiting:
        key, running = "first/instance-0", staticmethod(lambda: True)

    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "batch.yaml").read_text())
    first = copy.deepcopy(document)
    first["metadata"]["name"] = "first"
    first["spec"]["batch"]["stop"] = True
    supervisor.apply(parse_document(first, "test"))
    stopped = supervisor.endpoints["first"]
    stopped.labels = {KIND_LABEL: TRANSFORM_JOB}
    stopped.status = Status(Phase.STOPPED, "Stopped")
    stopped.created = "2026-01-01T00:00:00Z"  # older than the next job, made in the same second
    supervisor.apply(parse_document(document, "test"))
    second = supervisor.endpoints["abalone-batch"]
    supervisor.retiring.append((cast(Child, Exiting()), time.monotonic() + 60))
    assert supervisor._batch_output_held_by(second) == "first"
    supervisor.retiring.clear()
    assert supervisor._batch_output_held_by(second) is None


def test_a_stored_job_with_a_dotted_uri_loads_and_keeps_its_hold(tmp_path: Path) -> None:
    """A job up stored under a release that took a '.' segment in output.uri was dropped at
    load_state (a spec this version refuses), and with it its hold: a job on the same folder
    then ran beside it. The state is what up admitted; the check is for up's apply."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "batch.yaml").read_text())
    document["spec"]["batch"]["output"]["uri"] = f"file://{tmp_path}/out/"
    first = copy.deepcopy(document)
    first["metadata"]["name"] = "first"
    supervisor.apply(parse_document(first, "test"))
    saved_path = tmp_path / "endpoints" / "first.json"
    saved = json.loads(saved_path.read_text())
    saved["created"] = "2026-01-01T00:00:00Z"  # older than the next job
    saved["document"]["spec"]["batch"]["output"]["uri"] = f"file://{tmp_path}/./out/"
    saved_path.write_text(json.dumps(saved))
    dotted = copy.deepcopy(saved["document"])
    with pytest.raises(ManifestError, match="has a '.' segment"):
        parse_document(dotted, "test")  # up's apply still refuses it

    restarted = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    restarted.load_state()
    assert "first" in restarted.endpoints
    restarted.apply(parse_document(document, "test"))
    assert restarted._batch_output_held_by(restarted.endpoints["abalone-batch"]) == "first"


def test_a_waiting_job_is_told_how_to_run_now_in_its_maker_s_words(tmp_path: Path) -> None:
    """``up`` told a job CreateTransformJob made to "delete this one", a call the platform API
    does not have: it names StopTransformJob and S3OutputPath; a YAML job keeps output.uri."""
    from infermodes.platform.translate import KIND_LABEL, TRANSFORM_JOB

    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "batch.yaml").read_text())
    first = copy.deepcopy(document)
    first["metadata"]["name"] = "first"
    supervisor.apply(parse_document(first, "test"))
    supervisor.endpoints["first"].created = "2026-01-01T00:00:00Z"
    supervisor.apply(parse_document(document, "test"))
    second = supervisor.endpoints["abalone-batch"]
    for labels, words in (({KIND_LABEL: TRANSFORM_JOB}, "; StopTransformJob this job and create"),
                          ({}, "; delete this one and create it with an output.uri")):  # fmt: skip
        second.labels = labels
        asyncio.run(supervisor._run_batch(second, time.monotonic()))
        assert (second.status.reason, second.desired) == ("OutputInUse", 0)
        assert words in second.status.message, second.status.message
    assert not second.children  # it waited: no instance started


def test_the_files_of_one_apply_are_applied_all_or_none_in_one_request() -> None:
    """``apply -f DIR`` sent its files one by one: one ``up`` refused (an endpoint the platform
    API made: 409) left those before it applied, without a word. One request, checked whole."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from infermodes.local.api import create_router, manifests_request

    applied: list[str] = []

    class Applying:
        def placed(self, manifest: Manifest) -> Manifest:
            return manifest

        def apply(self, manifest: Manifest) -> str:
            applied.append(manifest.name)
            return "created"

    def owned_by_the_api(manifests: list[Manifest], source: str) -> None:
        if any(manifest.name == "theirs" for manifest in manifests):
            raise OwnedElsewhere(f"{source} (theirs): made through the platform API")

    app = FastAPI()
    app.include_router(create_router(cast(Supervisor, Applying()), None, owned_by_the_api))
    client = TestClient(app)
    theirs = GOOD.replace("{name: abalone}", "{name: theirs}")
    refused = client.post("/_infermodes/manifests",
                          content=manifests_request([("a.yaml", GOOD.encode()),
                                                     ("b.yaml", theirs.encode())]))  # fmt: skip
    assert refused.status_code == 409, refused.text
    assert refused.json()["message"] == "b.yaml (theirs): made through the platform API"
    assert applied == []
    for body, said in ((b'{"files": []}', "files: List should have at least 1 item"),
                       (b'{"files": [{"source": "a"}]}', "files.0.text: Field required"),
                       (b"kind: [", "not a set of manifest files: Invalid JSON")):  # fmt: skip
        invalid = client.post("/_infermodes/manifests", content=body)
        assert invalid.status_code == 400 and said in invalid.json()["message"], invalid.text
    big = GOOD + "#" * MAX_MANIFEST_BYTES
    files = {"files": [{"source": "big.yaml", "text": big}]}
    too_big = client.post("/_infermodes/manifests", content=json.dumps(files))
    assert too_big.status_code == 400 and too_big.json()["message"].startswith(
        f"big.yaml: {len(big)} bytes, over the limit"
    )
    done = client.post("/_infermodes/manifests",
                       content=manifests_request([("a.yaml", GOOD.encode())]))  # fmt: skip
    assert done.json() == {"applied": [{"name": "abalone", "result": "created"}], "skipped": []}
    assert applied == ["abalone"]


def test_the_api_keeps_one_endpoint_per_name_whatever_its_namespace(tmp_path: Path) -> None:
    """``ns-x`` applied in ``prod`` and then in ``staging`` was one endpoint, the second
    replacing the first without a word: now a 409 naming the other namespace, and nothing in
    the request is applied; without a namespace, the name's endpoint is updated where it is."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from infermodes.local.api import create_router, manifests_request

    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    supervisor.first_round.set()  # no round runs here: what it shows is what apply made
    app = FastAPI()
    app.include_router(create_router(supervisor, None, no_owner))
    client = TestClient(app)

    def in_namespace(name: str, namespace: str) -> str:
        return GOOD.replace("{name: abalone}", f"{{name: {name}, namespace: {namespace}}}")

    created = client.post("/_infermodes/endpoints", content=in_namespace("ns-x", "prod"))
    assert created.json()["applied"] == [{"name": "ns-x", "result": "created"}]
    other = in_namespace("other", "staging")
    refused = client.post("/_infermodes/manifests",
                          content=manifests_request([("a.yaml", other.encode()),
                                                     ("b.yaml", in_namespace("ns-x", "staging")
                                                      .encode())]))  # fmt: skip
    assert refused.status_code == 409
    assert "b.yaml document 1 (ns-x): endpoint ns-x exists in namespace 'prod', not 'staging'" \
        in refused.json()["message"]  # fmt: skip
    assert sorted(supervisor.endpoints) == ["ns-x"]
    bare = GOOD.replace("{name: abalone}", "{name: ns-x}")
    assert client.post("/_infermodes/endpoints", content=bare).json()["applied"] == [
        {"name": "ns-x", "result": "unchanged"}
    ]
    shown = client.get("/_infermodes/endpoints/ns-x").json()
    assert shown["metadata"]["namespace"] == "prod"
    # the gateway's table routes it under up's own key, where its replicas are set: under
    # prod, invocations found no replica (503 once the wait ended)
    endpoint = supervisor.endpoints["ns-x"]
    assert (
        supervisor.object_of(endpoint, with_processes=False)["metadata"]["namespace"] == NAMESPACE
    )
    assert "Namespace: prod" in describe(shown)
    assert client.post("/_infermodes/endpoints", content=other).json()["applied"] == [
        {"name": "other", "result": "created"}
    ]
    assert client.get("/_infermodes/endpoints/other").json()["metadata"]["namespace"] == "staging"


def test_logs_say_which_files_no_process_of_the_endpoint_writes_now(tmp_path: Path) -> None:
    """After a change of mode, the old mode's server log was listed as the endpoint's, with no
    word that its process had stopped; up's log said nothing of it stopping for the change."""
    supervisor = Supervisor(tmp_path, FixedQueue(Backlog(0, 0, 0, "sqlite")), "", 0)  # type: ignore[arg-type]
    document = yaml.safe_load((REPO / "examples" / "abalone" / "async.yaml").read_text())
    endpoint = supervisor._add(parse_document(document, "test"), "2026-01-01T00:00:00Z")
    endpoint.children["abalone-async/worker-1"] = FakeChild(True, "abalone-async/worker-1")  # type: ignore[assignment]
    folder = tmp_path / "logs" / "abalone-async"
    folder.mkdir(parents=True)
    for key in ("server-0", "worker-1"):
        (folder / f"abalone-async-{key}.log").write_text(key)
    assert supervisor.log_paths("abalone-async") == [
        (folder / "abalone-async-server-0.log", False),
        (folder / "abalone-async-worker-1.log", True),
    ]
    assert supervisor.log_paths("nothing-here") == []
