"""``infermodes up`` as a process, with the example manifests pointed at a trained model: its
CLI, a restart that keeps accepted work, orphans of a killed ``up``, async on RabbitMQ. Each
mode's behaviour is in ``tests/scenarios``, run on ``up`` and on the operator alike."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import numpy as np
import pytest
import yaml
from botocore.exceptions import ClientError

from infermodes.local.access import ACCESS_KEY_ID, read_token
from infermodes.local.api import NOTIFICATIONS_PER_CALL
from infermodes.local.manifests import MAX_MANIFEST_BYTES
from tests.conftest import AbaloneModel
from tests.support.async_plane import Notifications, WebhookReceiver, to_csv
from tests.support.batch import csv_text, expected_scores, sample_rows, scores_of
from tests.support.gateway import answer_head, running_gateway, static_endpoint
from tests.support.local import Up, document, laughs, manifest, running_up
from tests.support.processes import INFERMODES, free_port, running_server, wait_until
from tests.support.rabbitmq import Broker
from tests.support.s3 import holding_s3_server

WAIT = 60.0
LOCATION = "X-Amzn-SageMaker-InputLocation"


def scores(text: str) -> np.ndarray:
    return np.array(text.split(), dtype=np.float32)


@pytest.fixture(scope="module")
def up(abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    folder = tmp_path_factory.mktemp("up")
    files = [manifest("realtime", abalone_model.tarball, folder, minReplicas=1, maxReplicas=1)]
    with running_up(folder / "state", files, folder / "up.log") as process:
        yield process


# A scaling target any request rate exceeds: while requests flow, the autoscaler keeps
# maxReplicas, so a replica count read then is the rollover's, not a scale-in's (idle, it
# scales in once scaleInCooldownSeconds have passed since its last change)
BUSY_SCALING = {"target": 0.001}


def desired_until_served(up: Up, name: str, served: Callable[[dict[str, Any]], bool]) -> set[int]:
    """Every ``desiredReplicas`` the endpoint showed, read every 50 ms, until ``served`` says
    its status is the one waited for. A rollover that dropped the carried replicas shows the
    new spec's minimum from its first decision until the autoscaler measured two load samples
    (seconds): such a count shows up here."""
    shown: set[int] = set()

    def looked() -> bool:
        status = up.status(name)
        shown.add(status["desiredReplicas"])
        return served(status)

    wait_until(looked, WAIT, f"{name} served by the new spec")
    return shown


@contextlib.contextmanager
def steady_requests(up: Up, name: str, body: bytes) -> Iterator[list[int]]:
    """Requests sent one after another (at most 20,000) while the block runs: their statuses."""
    answers: list[int] = []
    stop = threading.Event()

    def send() -> None:
        for _ in range(20_000):
            if stop.is_set():
                return
            answers.append(up.invoke(name, body).status_code)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        yield answers
    finally:
        stop.set()
        sender.join(120)


def cli(up: Up | str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run against ``up`` (or a URL where none runs)."""
    env = up.cli_env if isinstance(up, Up) else {**os.environ, "INFERMODES_UP_URL": up}
    return subprocess.run([INFERMODES, *args], capture_output=True, text=True, timeout=120,
                          env=env)  # fmt: skip


def test_the_cli_lists_describes_invokes_and_applies(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    wait_until(lambda: up.status("abalone")["phase"] == "InService", WAIT, "realtime InService")
    listed = cli(up, "get")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["NAME", "MODE", "PHASE", "READY", "DESIRED", "BACKLOG",
                              "PROGRESS", "AGE"]  # fmt: skip
    assert lines[0].split()[:5] == ["abalone", "realtime", "InService", "1", "1"]
    described = cli(up, "describe", "abalone")
    assert f"{up.url}/endpoints/abalone/invocations" in described.stdout
    assert "abalone/server-" in described.stdout
    row = ",".join(repr(float(v)) for v in abalone_model.test_rows[0])
    invoked = cli(up, "invoke", "abalone", "--data", row)
    assert invoked.returncode == 0, invoked.stderr
    expected = abalone_model.booster().inplace_predict(abalone_model.test_rows[:1])  # type: ignore[attr-defined]
    np.testing.assert_allclose(scores(invoked.stdout), expected, rtol=1e-6)
    assert "abalone-server-0.log" in cli(up, "logs", "abalone").stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest("realtime", abalone_model.tarball, tmp_path).read_text()
                   .replace("minReplicas: 1", "minReplicas: -1"))  # fmt: skip
    refused = cli(up, "apply", "-f", str(bad))
    assert refused.returncode != 0
    assert "bad.yaml" in refused.stderr and "spec.realtime.minReplicas" in refused.stderr
    assert cli(up, "delete", "nothing-here").returncode != 0


def test_apply_takes_manifests_on_standard_input_all_or_none(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``infermodes apply -f -``, as ``kubectl apply -f -`` reads a manifest piped to it: it
    was refused (``'-' does not exist``). A stream with one bad document applies none of it,
    and stdin that is empty or not UTF-8 is refused in one line."""
    written = yaml.safe_load(manifest("serverless", abalone_model.tarball, tmp_path).read_text())
    good = yaml.safe_dump({**written, "metadata": {"name": "from-stdin"}}).encode()
    bad = good.replace(b"from-stdin", b"also-from-stdin").replace(b"maxConcurrency:", b"nope:")

    def apply(stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([INFERMODES, "apply", "-f", "-"], input=stdin, capture_output=True,
                              timeout=120, env=up.cli_env)  # fmt: skip

    def names() -> list[str]:
        return [line.split()[0] for line in cli(up, "get").stdout.splitlines()[1:]]

    for stdin, said in ((good + b"---\n" + bad, b"standard input document 2 (also-from-stdin)"),
                        (b"", b"standard input: no InferenceEndpoint in it"),
                        (b"  \n", b"standard input: no InferenceEndpoint in it"),
                        (good.replace(b"from-stdin", b"caf\xe9"),
                         b"standard input: not UTF-8 text: byte 0xe9 on line ")):  # fmt: skip
        refused = apply(stdin)
        assert refused.returncode == 1, refused
        assert said in refused.stderr and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert names() == ["abalone"]
    applied = apply(good)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == b"inferenceendpoint/from-stdin created\n"
    assert names() == ["abalone", "from-stdin"]
    assert cli(up, "delete", "from-stdin").returncode == 0


def test_an_endpoint_keeps_its_namespace_and_one_name_is_one_endpoint_whatever_it(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Any namespace was refused but ``local`` (most manifests say ``default`` or a team's);
    before that, ``ns-x`` applied in ``prod`` and then in ``staging`` was one endpoint, the
    second overwriting the first without a word. Now the namespace is kept and shown, the
    second is refused naming the first's, and a manifest without one updates ``ns-x`` where
    it is."""
    written = yaml.safe_load(manifest("serverless", abalone_model.tarball, tmp_path).read_text())
    placed = tmp_path / "placed.yaml"

    def apply_in(metadata: dict[str, str]) -> subprocess.CompletedProcess[str]:
        placed.write_text(yaml.safe_dump({**written, "metadata": metadata}))
        return cli(up, "apply", "-f", str(placed))

    applied = apply_in({"name": "ns-x", "namespace": "prod"})
    assert applied.stdout == "inferenceendpoint/ns-x created\n", applied.stderr
    assert "Namespace: prod" in cli(up, "describe", "ns-x").stdout
    refused = apply_in({"name": "ns-x", "namespace": "staging"})
    assert refused.returncode == 1
    said = ("placed.yaml document 1 (ns-x): endpoint ns-x exists in namespace 'prod', not "
            "'staging': infermodes up keeps one endpoint per name")  # fmt: skip
    assert said in refused.stderr, refused.stderr
    assert up.endpoint("ns-x")["metadata"]["namespace"] == "prod"
    unchanged = apply_in({"name": "ns-x"})
    assert unchanged.stdout == "inferenceendpoint/ns-x unchanged\n", unchanged.stderr
    bad = apply_in({"name": "ns-y", "namespace": "Prod_1"})
    assert bad.returncode == 1 and "metadata.namespace 'Prod_1' must be a DNS-1123 label" \
        in bad.stderr, bad.stderr  # fmt: skip
    assert cli(up, "delete", "ns-x").returncode == 0
    applied = apply_in({"name": "ns-x", "namespace": "staging"})  # its name free again
    assert applied.stdout == "inferenceendpoint/ns-x created\n", applied.stderr
    assert up.endpoint("ns-x")["metadata"]["namespace"] == "staging"
    assert cli(up, "delete", "ns-x").returncode == 0


def test_up_f_refuses_a_name_its_state_runs_in_another_namespace(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The state's ``ns-x`` of ``prod`` and ``up -f`` of ``ns-x`` in ``staging``: refused
    before anything starts, naming ``prod``, as ``apply`` refuses it."""
    written = yaml.safe_load(manifest("serverless", abalone_model.tarball, tmp_path).read_text())
    placed = tmp_path / "placed.yaml"
    in_prod = {"name": "ns-x", "namespace": "prod"}
    placed.write_text(yaml.safe_dump({**written, "metadata": in_prod}))
    with running_up(tmp_path / "state", [placed], tmp_path / "up.log") as first:
        assert first.endpoint("ns-x")["metadata"]["namespace"] == "prod"
    placed.write_text(placed.read_text().replace("namespace: prod", "namespace: staging"))
    refused = subprocess.run([INFERMODES, "up", "--port", str(free_port()), "--state-dir",
                              str(tmp_path / "state"), "-f", str(placed)], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert refused.returncode != 0
    assert "endpoint ns-x exists in namespace 'prod', not 'staging'" in refused.stderr, refused


@pytest.mark.parametrize(
    ("changed", "said"),
    [
        ({"metadata": {"name": 123}}, "metadata.name must be a string (a DNS-1035 label), got 123"),
        ({"spec": {"serverless": {}}}, "spec.serverless is not allowed when mode is realtime"),
        (
            {"spec": {"realtime": {"scaling": {"target": float("nan")}}}},
            "m.yaml document 1 (abalone): spec.realtime.scaling.target: must be a finite number",
        ),
        (
            {"spec": {"realtime": {"resources": {"memory": "512m"}}}},
            "m.yaml document 1 (abalone): spec.realtime.resources.memory: must be at least 32Mi"
            ", as a replica's processes take tens of MiB to start; got '512m', 1 byte; 'm' is a "
            "thousandth: 512Mi is likely meant",
        ),
    ],
)
def test_apply_says_what_is_wrong_with_a_name_or_a_block_as_it_is(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path, changed: dict[str, Any], said: str
) -> None:
    """A name that is a number was "required", a second mode's block made the mode's own
    "required when mode is serverless and not allowed otherwise", a NaN was "Out of range
    float values are not JSON compliant", naming no field, and 512m of memory (0.512 bytes)
    was taken."""
    written = yaml.safe_load(manifest("realtime", abalone_model.tarball, tmp_path).read_text())
    written["metadata"].update(changed.get("metadata", {}))
    written["spec"].update(changed.get("spec", {}))
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(written))
    refused = cli(up, "apply", "-f", str(tmp_path / "m.yaml"))
    assert refused.returncode == 1 and said in refused.stderr, refused.stderr


def test_kubernetes_quantities_with_an_exponent_or_a_peta_unit_are_taken(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``memory: 1e9`` and ``cpu: 5e-1`` (or ``memory: 1Pi``) are quantities Kubernetes
    takes; ``up`` refused them as "must be a quantity above zero" (no exponent, nothing past T
    and Ti)."""
    resources = {"cpu": "5e-1", "memory": "1e9"}
    written = document("realtime", abalone_model.tarball, tmp_path, resources=resources)
    (tmp_path / "q.yaml").write_text(yaml.safe_dump({**written, "metadata": {"name": "quant"}}))
    applied = cli(up, "apply", "-f", str(tmp_path / "q.yaml"))
    assert applied.stdout == "inferenceendpoint/quant created\n", applied.stderr
    wait_until(lambda: up.status("quant")["phase"] == "InService", WAIT, "quant InService")
    row = ",".join(repr(float(v)) for v in abalone_model.test_rows[0])
    assert cli(up, "invoke", "quant", "--data", row).returncode == 0
    written["spec"]["realtime"]["resources"]["memory"] = "1Pi"
    (tmp_path / "q.yaml").write_text(yaml.safe_dump({**written, "metadata": {"name": "quant"}}))
    applied = cli(up, "apply", "-f", str(tmp_path / "q.yaml"))
    assert applied.stdout == "inferenceendpoint/quant configured\n", applied.stderr
    assert cli(up, "delete", "quant").returncode == 0


def test_logs_after_a_change_of_mode_say_which_are_of_the_stopped_processes(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A realtime endpoint made async: ``infermodes logs`` printed the realtime server's log
    as the endpoint's, with no word that its process had stopped, and up's log said nothing of
    the server stopping for the change."""
    realtime = document("realtime", abalone_model.tarball, tmp_path)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({**realtime, "metadata": {"name": "chg"}}))
    assert cli(up, "apply", "-f", str(tmp_path / "m.yaml")).returncode == 0
    wait_until(lambda: up.status("chg")["phase"] == "InService", WAIT, "chg InService")
    made_async = document("async", abalone_model.tarball, tmp_path, minReplicas=1)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({**made_async, "metadata": {"name": "chg"}}))
    applied = cli(up, "apply", "-f", str(tmp_path / "m.yaml"))
    assert applied.stdout == "inferenceendpoint/chg configured\n", applied.stderr
    wait_until(lambda: up.status("chg")["phase"] == "InService", WAIT, "chg async InService")
    wait_until(lambda: "chg/worker-0" in str(up.running("chg")), WAIT, "chg's worker")
    logs = cli(up, "logs", "chg").stdout
    headers = [line for line in logs.splitlines() if line.startswith("==> ")]
    stopped = (
        "==> chg-server-0.log (stopped: no process of the endpoint writes it now; one that "
        "ended, was scaled in, or ran its spec before the last change) <=="
    )
    assert headers == [stopped, "==> chg-worker-0.log <=="], headers
    assert "chg/server-0 stopping: its endpoint's spec changed" in up.log
    assert cli(up, "delete", "chg").returncode == 0


def test_apply_of_a_path_to_a_file_named_dash_reads_that_file_not_standard_input(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Only a bare ``-`` is standard input (kubectl's rule): ``-f ./-`` read standard input,
    as the path compared equal to ``-`` once made a ``Path``."""
    written = yaml.safe_load(manifest("serverless", abalone_model.tarball, tmp_path).read_text())
    (tmp_path / "-").write_text(yaml.safe_dump({**written, "metadata": {"name": "dash-file"}}))
    for given in ("./-", str(tmp_path / "-")):
        applied = subprocess.run([INFERMODES, "apply", "-f", given], input=b"", cwd=tmp_path,
                                 capture_output=True, timeout=120, env=up.cli_env)  # fmt: skip
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.startswith(b"inferenceendpoint/dash-file "), applied.stdout
    assert cli(up, "delete", "dash-file").returncode == 0


@pytest.mark.parametrize("name", ["café.yaml", os.fsdecode(b"caf\xe9.yaml")])
def test_apply_of_a_file_whose_name_is_not_ascii_names_it_as_written(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path, name: str
) -> None:
    """The file's name goes to ``up`` in a header, which httpx encodes as ASCII: ``apply -f
    café.yaml`` ended in a UnicodeEncodeError's traceback, and so did a name that is not even
    UTF-8 (Latin-1 bytes). What ``up`` says of the file (a Secret it skips) names it as
    written, a byte that is not UTF-8 as U+FFFD."""
    written = yaml.safe_load(manifest("serverless", abalone_model.tarball, tmp_path).read_text())
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}}
    file = tmp_path / name
    file.write_text(yaml.safe_dump_all([secret, {**written, "metadata": {"name": "cafe"}}]))
    applied = cli(up, "apply", "-f", str(file))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == "inferenceendpoint/cafe created\n"
    shown = str(file).encode(errors="surrogateescape").decode(errors="replace")
    assert f"Warning: {shown} document 1: Secret 'creds' skipped" in applied.stderr
    assert cli(up, "delete", "cafe").returncode == 0


def test_a_name_that_would_be_a_path_outside_the_state_dir_is_refused(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``..`` in a name once reached the state folder's paths (and deleted a folder above
    it); the CRD's name rule refuses it, as any name ``kubectl apply`` would refuse."""
    written = yaml.safe_load(manifest("realtime", abalone_model.tarball, tmp_path).read_text())
    for name in ("../..", "a/b", "UPPER"):
        hostile = tmp_path / "hostile.yaml"
        hostile.write_text(yaml.safe_dump({**written, "metadata": {"name": name}}))
        refused = cli(up, "apply", "-f", str(hostile))
        assert refused.returncode != 0, name
        assert "metadata.name" in refused.stderr and "DNS-1035" in refused.stderr, refused.stderr
        assert "internal error" not in refused.stderr
    assert (up.state_dir / "endpoints").is_dir()
    assert [line.split()[0] for line in cli(up, "get").stdout.splitlines()[1:]] == ["abalone"]


def test_a_web_page_can_neither_apply_a_manifest_nor_reach_up_under_its_own_name(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A page's cross-site POST of text/plain needs no preflight, so a browser sends it: it
    would apply any manifest to an open ``up``. The page's Origin is refused, and so is a
    Host that is not a loopback name (DNS rebinding); nothing is applied."""
    written = yaml.safe_load(manifest("realtime", abalone_model.tarball, tmp_path).read_text())
    body = yaml.safe_dump({**written, "metadata": {"name": "from-a-web-page"}}).encode()
    port = up.url.rpartition(":")[2]
    for headers in ({"origin": "https://attacker.example"},
                    {"host": f"attacker.example:{port}"}):  # fmt: skip
        refused = httpx.post(f"{up.url}/_infermodes/endpoints", content=body,
                             headers={"content-type": "text/plain", **headers})  # fmt: skip
        assert refused.status_code == 403, refused.text
        assert refused.json()["__type"] == "AccessDeniedException"
    assert [line.split()[0] for line in cli(up, "get").stdout.splitlines()[1:]] == ["abalone"]


def test_up_answers_its_api_and_platform_api_only_to_who_can_read_its_token(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Any user of the machine could apply a manifest to ``up`` over loopback (processes run as
    its user; ``allowPickle`` runs their code), delete endpoints, read logs, or create models
    through the platform API. Without the token in ``<state dir>/token`` (0600) it is a 401
    naming that file; the CLI and boto3 with the token work. Its state dir (logs, the queue's
    payloads, records) was 0755: 0700."""
    import boto3

    assert up.token_file.stat().st_mode & 0o777 == 0o600
    assert up.state_dir.stat().st_mode & 0o777 == 0o700
    token = read_token(up.token_file)
    written = yaml.safe_load(manifest("realtime", abalone_model.tarball, tmp_path).read_text())
    body = yaml.safe_dump({**written, "metadata": {"name": "from-another-user"}}).encode()
    api = f"{up.url}/_infermodes"
    wrong = ["Bearer not-the-token", f"Bearer {token[:-1]}", token]  # the last: no "Bearer"
    for headers in [{}, *({"authorization": value} for value in wrong)]:
        for refused in (httpx.post(f"{api}/endpoints", content=body, headers=headers),
                        httpx.get(f"{api}/endpoints/abalone/logs", headers=headers),
                        httpx.delete(f"{api}/endpoints/abalone", headers=headers)):  # fmt: skip
            assert refused.status_code == 401, refused.text
            assert str(up.token_file.resolve()) in refused.json()["message"]
            assert token not in refused.text
    unsigned = httpx.post(
        f"{up.url}/",
        content=b"{}",
        headers={
            "x-amz-target": "SageMaker.ListModels",
            "content-type": "application/x-amz-json-1.1",
        },
    )
    assert unsigned.status_code == 401, unsigned.text
    assert str(up.token_file.resolve()) in unsigned.json()["message"]
    for key_id, secret in (("x", "x"), (ACCESS_KEY_ID, "not-the-token")):
        guessed = boto3.client("sagemaker", endpoint_url=up.url, region_name="us-east-1",
                               aws_access_key_id=key_id, aws_secret_access_key=secret)  # fmt: skip
        with pytest.raises(ClientError) as refusal:
            guessed.list_models()
        assert refusal.value.response["Error"]["Code"] in (
            "UnrecognizedClientException",
            "InvalidSignatureException",
        )
    keyed = boto3.client("sagemaker", endpoint_url=up.url, region_name="us-east-1",
                         aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=token)  # fmt: skip
    assert keyed.list_models()["Models"] == []
    # the CLI sends the token; without the file it says where up writes it
    assert [line.split()[0] for line in cli(up, "get").stdout.splitlines()[1:]] == ["abalone"]
    elsewhere = {**up.cli_env, "INFERMODES_UP_TOKEN_FILE": str(tmp_path / "no-token")}
    lost = subprocess.run([INFERMODES, "get"], capture_output=True, text=True, timeout=120,
                          env=elsewhere)  # fmt: skip
    assert lost.returncode == 1 and str(tmp_path / "no-token") in lost.stderr, lost.stderr
    assert "Traceback" not in lost.stderr
    assert token not in up.log


def test_up_sweeps_stale_records_and_inputs_of_its_async_endpoints(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The retention sweep the gateway runs: ``up`` ran none, and the request records, result
    claims and inline inputs a crash left piled up for good."""
    output = tmp_path / "async" / "output"
    day = 24 * 3600

    def left(path: Path, age: float) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (time.time() - age, time.time() - age))
        return path

    inputs = output / "input"
    stale = [left(inputs / "a-old.request", 2 * day), left(inputs / "b-old.result", 2 * day),
             left(inputs / "c-old.in", day), left(output / ".d.out.x1.partial", day)]  # fmt: skip
    fresh = [left(inputs / "e-new.request", 60), left(inputs / "f-new.in", 60),
             left(inputs / "rows.csv", 2 * day)]  # fmt: skip
    files = [manifest("async", abalone_model.tarball, tmp_path)]
    with running_up(tmp_path / "state", files, tmp_path / "up.log"):
        wait_until(lambda: not any(p.exists() for p in stale), WAIT, "the sweep at start")
        assert all(p.exists() for p in fresh)


def test_up_names_the_cluster_gateways_variables_it_does_not_use_once_and_serves_without_them(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``up`` with a cluster gateway's access keys answered unsigned invocations and said
    nothing (its user believed them protected), and it half-used the async storage prefixes:
    a warning naming a chart value ``up`` has not, the request accepted all the same. It now
    names both variables in one warning at start, never their values, and serves as without
    them: an unsigned invocation answers, an async request is accepted and answered."""
    secret = "AKIDUPTEST:never-in-a-log-3f9c"
    prefixes = '["file:///nowhere/"]'
    environ = {"INFERMODES_GATEWAY_ACCESS_KEYS": secret,
               "INFERMODES_GATEWAY_ASYNC_STORAGE_PREFIXES": prefixes}  # fmt: skip
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1),
             manifest("async", abalone_model.tarball, tmp_path)]  # fmt: skip
    with (
        mock.patch.dict("os.environ", environ),
        running_up(tmp_path / "state", files, tmp_path / "up.log") as up,
    ):
        wait_until(lambda: up.status("abalone")["phase"] == "InService", WAIT, "realtime InService")
        answer = up.invoke("abalone", to_csv(abalone_model.test_rows[:2]))
        assert answer.status_code == 200, answer.text
        accepted = accept_async(up, abalone_model.test_rows, 1, 2)
        wait_until(lambda: set(outputs(tmp_path / "async" / "output")) == set(accepted), WAIT,
                   "the async output")  # fmt: skip
        log = up.log
    named = [line for line in log.splitlines() if "INFERMODES_GATEWAY_" in line]
    assert len(named) == 1, log
    assert "WARNING" in named[0] and all(name in named[0] for name in environ), named[0]
    assert secret.partition(":")[2] not in log and "AKIDUPTEST" not in log
    assert "nowhere" not in log and "gateway.asyncStoragePrefixes" not in log


def test_up_names_its_processes_unknown_variables_once_not_once_per_process(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Under ``up``, each model server and worker named the same misspelt variables of
    ``up``'s environment in its own log, at each start: two endpoints' three processes, three
    lines. ``up`` names each once, in its own log, and its processes, not given them, name none
    and serve as before; a model server run alone still names its own."""
    environ = {"INFERMODES_SERVE_WORKRES": "3", "INFERMODES_WORKER_MAX_ATTEMPT": "2"}
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=2, maxReplicas=2),
             manifest("async", abalone_model.tarball, tmp_path)]  # fmt: skip
    state = tmp_path / "state"
    with (
        mock.patch.dict("os.environ", environ),
        running_up(state, files, tmp_path / "up.log") as up,
    ):
        wait_until(lambda: up.status("abalone")["phase"] == "InService", WAIT, "InService")
        assert len(up.running("abalone")) == 2
        answer = up.invoke("abalone", to_csv(abalone_model.test_rows[:2]))
        assert answer.status_code == 200, answer.text
        accepted = accept_async(up, abalone_model.test_rows, 1, 2)
        wait_until(lambda: set(outputs(tmp_path / "async" / "output")) == set(accepted), WAIT,
                   "the async output")  # fmt: skip
        logs = {path: path.read_text(errors="replace") for path in (state / "logs").rglob("*")
                if path.is_file()}  # fmt: skip
        logs[up.log_path] = up.log
    assert len([path for path in logs if path.parent.name == "abalone"]) == 2, list(logs)
    assert any(path.parent.name == "abalone-async" for path in logs), list(logs)
    for variable in environ:
        lines = [(path.name, line) for path, text in logs.items() for line in text.splitlines()
                 if variable in line]  # fmt: skip
        assert len(lines) == 1 and lines[0][0] == up.log_path.name, lines
        assert "WARNING" in lines[0][1] and "did you mean" in lines[0][1], lines
    alone = tmp_path / "alone.log"
    with running_server(["--model", f"file://{abalone_model.tarball}"], alone, env=environ):
        pass
    said = [line for line in alone.read_text().splitlines() if "INFERMODES_SERVE_WORKRES" in line]
    assert len(said) == 1 and "did you mean" in said[0], alone.read_text()


def test_ups_async_route_refuses_as_the_gateway_under_the_gateways_accept_variables(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``up`` kept its own inline limit and allowed input prefixes whatever its environment
    said (and named the variables as unused): under the gateway's variables, an inline body
    over ``MAX_INLINE_BYTES`` and an ``InputLocation`` outside ``ALLOWED_INPUT_PREFIXES`` now
    get from ``up`` the very answer a real gateway gives, and a location under an allowed
    prefix is accepted and predicted."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    rows = abalone_model.test_rows[:2]
    (allowed / "rows.csv").write_bytes(to_csv(rows))
    environ = {"INFERMODES_GATEWAY_MAX_INLINE_BYTES": "64",
               "INFERMODES_GATEWAY_ALLOWED_INPUT_PREFIXES": json.dumps([f"file://{allowed}/"]),
               "INFERMODES_GATEWAY_PUBLISH_CONNECTIONS": "1"}  # fmt: skip
    inline = to_csv(abalone_model.test_rows[:10])
    assert len(inline) > 64
    refusals = {
        "inline over the limit": ({}, inline),
        "outside the allowed prefixes": ({LOCATION: "s3://elsewhere/rows.csv"}, b""),
        "a file outside them": ({LOCATION: f"file://{tmp_path}/rows.csv"}, b""),
    }
    ours = document("async", abalone_model.tarball, tmp_path)
    endpoint = static_endpoint("abalone-async", "async", [], **ours["spec"]["async"])
    queue = {"INFERMODES_GATEWAY_BROKER_URL": f"sqlite://{tmp_path}/gateway-queue.db"}
    (tmp_path / "gateway").mkdir()

    def answers(url: str) -> dict[str, tuple[int, Any]]:
        sent = {what: httpx.post(f"{url}/endpoints/abalone-async/async-invocations",
                                 content=body, timeout=30,
                                 headers={"content-type": "text/csv", **headers})
                for what, (headers, body) in refusals.items()}  # fmt: skip
        return {what: (answer.status_code, answer.json()) for what, answer in sent.items()}

    with (
        mock.patch.dict("os.environ", environ),
        running_gateway([endpoint], tmp_path / "gateway", env=queue) as gateway,
        running_up(tmp_path / "state", [manifest("async", abalone_model.tarball, tmp_path)],
                   tmp_path / "up.log") as up,
    ):  # fmt: skip
        wait_until(lambda: up.status("abalone-async")["phase"] == "InService", WAIT, "InService")
        by_gateway, by_up = answers(gateway.url), answers(up.url)
        accepted = httpx.post(f"{up.url}/endpoints/abalone-async/async-invocations", timeout=30,
                              headers={LOCATION: f"file://{allowed}/rows.csv"})  # fmt: skip
        assert accepted.status_code == 202, accepted.text
        output = Path(accepted.json()["OutputLocation"].removeprefix("file://"))
        wait_until(output.exists, WAIT, "the output of the allowed input")
        log = up.log
    # the very answers, but for where the hint says the setting lives: the gateway's names the
    # chart's value too (a chart user sets that); up has no chart
    chart = ", in the chart gateway.allowedInputPrefixes,"
    assert chart in by_gateway["outside the allowed prefixes"][1]["message"], by_gateway
    as_up = json.loads(json.dumps(by_gateway).replace(chart, ""))
    assert by_up == {what: (code, body) for what, (code, body) in as_up.items()}
    assert by_up["inline over the limit"][0] == 413, by_up
    assert by_up["outside the allowed prefixes"][0] == 403, by_up
    assert "INFERMODES_GATEWAY_ALLOWED_INPUT_PREFIXES" in by_up["a file outside them"][1]["message"]
    np.testing.assert_allclose(scores(output.read_text()),
                               expected_scores(abalone_model.booster(), to_csv(rows)),
                               rtol=1e-5)  # fmt: skip
    assert "INFERMODES_GATEWAY_" not in log, log  # read, not named as unused


def test_a_manifest_over_a_mebibyte_is_refused_before_it_is_read_whole(up: Up) -> None:
    refused = httpx.post(f"{up.url}/_infermodes/endpoints", content=b"#" * (2 << 20),
                         headers=up.headers)  # fmt: skip
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"] == "PayloadTooLarge"
    invalid = httpx.post(f"{up.url}/_infermodes/endpoints", content=b"kind: [",
                         headers=up.headers)  # fmt: skip
    assert invalid.status_code == 400 and invalid.json()["error"] == "InvalidManifest"


def test_apply_and_up_refuse_a_manifest_file_over_the_limit_naming_it_its_size_and_the_limit(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``up -f`` took a 10 MB manifest, ``apply`` refused it naming no file: one limit, the
    same words on both paths and on standard input, nothing applied."""
    big = tmp_path / "big.yaml"
    written = manifest("serverless", abalone_model.tarball, tmp_path).read_text()
    big.write_text(written.replace("abalone-serverless", "too-big") + "#" * MAX_MANIFEST_BYTES)
    limit = f"over the limit of {MAX_MANIFEST_BYTES} bytes (1 MiB) for one manifest file"
    refused = cli(up, "apply", "-f", str(big))
    assert refused.returncode == 1, refused
    assert f"{big}: {big.stat().st_size} bytes, {limit}" in refused.stderr, refused.stderr
    piped = subprocess.run([INFERMODES, "apply", "-f", "-"], input=big.read_bytes(),
                           capture_output=True, timeout=120, env=up.cli_env)  # fmt: skip
    assert piped.returncode == 1, piped
    assert f"standard input: over {MAX_MANIFEST_BYTES} bytes, {limit}" in piped.stderr.decode()
    assert cli(up, "get", "too-big").returncode == 1
    done = subprocess.run([INFERMODES, "up", "--state-dir", str(tmp_path / "state"), "--port",
                           str(free_port()), "-f", str(big)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2, done
    assert f"{big}: {big.stat().st_size} bytes, {limit}" in done.stderr, done.stderr


def test_apply_refuses_an_endpoint_defined_twice_in_a_file_or_a_folder_as_up_does(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Two documents named ``twin`` were "created" then "configured" (rc 0, the last won),
    where ``up -f`` refused them: refused by both, naming both documents, nothing applied."""
    first, second = (
        {**document(mode, abalone_model.tarball, tmp_path), "metadata": {"name": "twin"}}
        for mode in ("realtime", "serverless")
    )
    one_file = tmp_path / "twin.yaml"
    one_file.write_text(yaml.safe_dump_all([first, second]))
    folder = tmp_path / "twins"
    folder.mkdir()
    (folder / "a.yaml").write_text(yaml.safe_dump(first))
    (folder / "b.yaml").write_text(yaml.safe_dump(second))
    for given, both in (
        (one_file, f"in {one_file} document 1 and in {one_file} document 2"),
        (folder, f"in {folder / 'a.yaml'} document 1 and in {folder / 'b.yaml'} document 1"),
    ):
        refused = cli(up, "apply", "-f", str(given))
        assert refused.returncode == 1, refused
        assert f"endpoint twin is defined twice: {both}" in refused.stderr, refused.stderr
        assert refused.stdout == ""
        assert cli(up, "get", "twin").returncode == 1
        done = subprocess.run([INFERMODES, "up", "--state-dir", str(tmp_path / "state"),
                               "--port", str(free_port()), "-f", str(given)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 2 and f"twin is defined twice: {both}" in done.stderr, done


def test_a_billion_laughs_is_refused_and_the_endpoints_answer_meanwhile(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Seven levels of aliases (473 bytes) held up's only event loop for seconds, every
    endpoint's invocations waiting, and grew it by half a gigabyte (nine: hours); now the
    parse runs in a thread and stops at the aliases' bound, for apply as for the API."""
    wait_until(lambda: up.status("abalone")["phase"] == "InService", WAIT, "realtime InService")
    text = laughs(7, manifest("realtime", abalone_model.tarball, tmp_path).read_text())
    row = ",".join(repr(float(v)) for v in abalone_model.test_rows[0]).encode()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        posted = pool.submit(httpx.post, f"{up.url}/_infermodes/endpoints", content=text,
                             headers=up.headers, timeout=90.0)  # fmt: skip
        invoked = up.invoke("abalone", row)
        refused = posted.result()
    assert invoked.status_code == 200, invoked.text
    expected = abalone_model.booster().inplace_predict(abalone_model.test_rows[:1])  # type: ignore[attr-defined]
    np.testing.assert_allclose(scores(invoked.text), expected, rtol=1e-6)
    assert refused.status_code == 400 and refused.json()["error"] == "InvalidManifest"
    assert refused.json()["message"].startswith(
        "the request body document 1: document contains excessive aliasing"
    ), refused.text
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(laughs(9, manifest("realtime", abalone_model.tarball, tmp_path).read_text()))
    applied = cli(up, "apply", "-f", str(bomb))
    assert applied.returncode == 1
    assert f"{bomb} document 1: document contains excessive aliasing" in applied.stderr


def test_apply_refuses_a_key_given_twice_naming_both_lines(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``mode: async`` then ``mode: realtime`` was applied as realtime without a word."""
    written = manifest("realtime", abalone_model.tarball, tmp_path).read_text()
    assert written.count("  mode: realtime\n") == 1
    twice = tmp_path / "twice.yaml"
    twice.write_text(written.replace("  mode: realtime\n", "  mode: async\n  mode: realtime\n"))
    first = written.splitlines().index("  mode: realtime") + 1
    refused = cli(up, "apply", "-f", str(twice))
    assert refused.returncode == 1
    assert (f'{twice} document 1: mapping key "mode" already defined at line {first} (again at '
            f"line {first + 1})") in refused.stderr  # fmt: skip
    # 1 and "1" are one key in the JSON a cluster gets: labels so were applied, the last winning
    assert written.count("  name: abalone\n") == 1
    labels = written.splitlines().index("  name: abalone") + 2
    twice.write_text(
        written.replace("  name: abalone\n", "  name: abalone\n  labels: {1: a, '1': b}\n")
    )
    refused = cli(up, "apply", "-f", str(twice))
    assert refused.returncode == 1
    assert (f'{twice} document 1: mapping key "1" already defined at line {labels} (again at '
            f"line {labels}, written 1 and '1')") in refused.stderr, refused.stderr  # fmt: skip
    assert [line.split()[0] for line in cli(up, "get").stdout.splitlines()[1:]] == ["abalone"]


def test_a_queue_file_that_cannot_be_opened_ends_up_with_a_line_naming_it(tmp_path: Path) -> None:
    """A folder in its place, another kind of file: a traceback said so before."""
    for name in ("folder", "not-sqlite"):
        state = tmp_path / name
        state.mkdir()
        if name == "folder":
            (state / "queue.db").mkdir()
        else:
            (state / "queue.db").write_bytes(b"x" * 200)
        done = subprocess.run([INFERMODES, "up", "--port", str(free_port()), "--state-dir",
                               str(state)], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 1, done.stderr
        said = f"Error: embedded queue {state / 'queue.db'} failed ("
        assert done.stderr.splitlines()[-1].startswith(said), done.stderr
        assert "Traceback" not in done.stderr


def test_a_state_dir_or_port_up_cannot_use_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for args, said in (
        (["--state-dir", str(tmp_path / "file" / "state")],
         f"cannot use {tmp_path / 'file' / 'state'} as the state dir: Not a directory"),
        (["--port", "70000"], "70000 is not in the range 1<=x<=65535"),
    ):  # fmt: skip
        done = subprocess.run([INFERMODES, "up", *args], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 2 and said in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_up_takes_manifests_on_standard_input_all_or_none_and_names_a_file_it_cannot_read(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``up -f -`` was refused (``Path '-' does not exist``) while ``apply -f -`` reads
    standard input: it reads it too, all of its documents or none, and only once."""
    written = yaml.safe_load(manifest("serverless", abalone_model.tarball, tmp_path).read_text())
    good = yaml.safe_dump({**written, "metadata": {"name": "from-stdin"}}).encode()
    bad = good.replace(b"from-stdin", b"also-from-stdin").replace(b"maxConcurrency:", b"nope:")
    state = tmp_path / "state"
    for args, stdin, said in (
        (["-f", "-"], good + b"---\n" + bad, "standard input document 2 (also-from-stdin)"),
        (["-f", "-"], b"", "standard input: no InferenceEndpoint in it"),
        (["-f", "-", "-f", "-"], good, "-f - is given 2 times: standard input is read once"),
        (["-f", "missing.yaml"], b"", "missing.yaml"),
    ):  # fmt: skip
        done = subprocess.run([INFERMODES, "up", "--state-dir", str(state), "--port",
                               str(free_port()), *args], input=stdin, capture_output=True,
                              timeout=60, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 2 and said.encode() in done.stderr, done.stderr
        assert b"Traceback" not in done.stderr
        assert not (state / "endpoints").exists()
    with running_up(state, [Path("-")], tmp_path / "up.log", stdin=good) as up:
        assert up.endpoint("from-stdin")["spec"]["mode"] == "serverless"


def test_notifications_after_an_id_that_is_not_one_is_a_400_in_the_apis_shape(up: Up) -> None:
    for after in ("abc", "-1", "1.5"):
        answer = httpx.get(f"{up.url}/_infermodes/notifications", params={"after": after},
                           headers=up.headers)  # fmt: skip
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "ValidationError"
        assert "after must be a notification id" in answer.json()["message"]
    # past the largest id SQLite holds (a 500 there), or past int()'s 4,300 digits: nothing
    for after in ("0", str(2**63), "9" * 5000):
        answer = httpx.get(f"{up.url}/_infermodes/notifications", params={"after": after},
                           headers=up.headers)  # fmt: skip
        assert answer.json() == {"items": []}, answer.text


def test_the_async_route_tells_a_realtime_endpoint_its_route(up: Up) -> None:
    answer = up.invoke("abalone", b"1", path="async-invocations")
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"] == (
        "endpoint abalone is a realtime endpoint: use /endpoints/abalone/invocations"
    )
    assert up.invoke("nothing-here", b"1", path="async-invocations").status_code == 404


def test_a_second_up_on_the_same_state_dir_is_refused(up: Up) -> None:
    """It would take the first one's children for orphans and kill them."""
    wait_until(lambda: up.status("abalone")["readyReplicas"] == 1, WAIT, "a ready replica")
    second = subprocess.run(
        [INFERMODES, "up", "--port", str(free_port()), "--state-dir", str(up.state_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode != 0
    assert f"another infermodes up is running on {up.state_dir}" in second.stderr
    assert up.status("abalone")["readyReplicas"] == 1


def test_the_cli_says_when_up_is_not_running() -> None:
    result = cli(f"http://127.0.0.1:{free_port()}", "get")
    assert result.returncode != 0
    assert "infermodes up is not running" in result.stderr


def outputs(folder: Path) -> dict[str, np.ndarray]:
    """Result objects by inference id (a dot starts an interrupted write's temporary file)."""
    return {
        path.name.removesuffix(".out"): scores(path.read_text())
        for path in folder.glob("*.out")
        if not path.name.startswith(".")
    }


def accept_async(up: Up, rows: np.ndarray, count: int, size: int) -> dict[str, np.ndarray]:
    """``count`` async requests of ``size`` rows each to abalone-async, every one accepted:
    inference id -> the rows it carries."""
    accepted = {}
    for index in range(count):
        chunk = rows[index : index + size]
        answer = up.invoke("abalone-async", to_csv(chunk), "async-invocations")
        assert answer.status_code == 202, answer.text
        accepted[answer.json()["InferenceId"]] = chunk
    return accepted


def backlog_total(up: Up, name: str) -> int | None:
    """The endpoint's queued + in-flight requests, None until up has read its queue."""
    backlog = up.status(name).get("backlog") or {}
    total: int | None = backlog.get("total")
    return total


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_accepted_async_requests_complete_once_after_a_restart_of_up(
    signum: int, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The model is not there on the first run, so workers cannot start and the 100 accepted
    requests stay queued; ``up`` is stopped, the model arrives, ``up`` starts again on the
    same state dir and every request ends with exactly one output. Its token stays: a client
    given it before the restart is answered after it."""
    model = tmp_path / "model" / "model.tar.gz"
    files = [manifest("async", model, tmp_path, maxConcurrentInvocationsPerInstance=4,
                      maxReplicas=2, targetBacklogPerInstance=50)]  # fmt: skip
    output = tmp_path / "async" / "output"
    rows = abalone_model.test_rows
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        accepted = accept_async(up, rows, 100, 3)
        assert not outputs(output)
        given = {"authorization": f"Bearer {read_token(up.token_file)}"}
        up.stop(signum)
        model.parent.mkdir()
        shutil.copy(abalone_model.tarball, model)
        up.start()
        listed = httpx.get(f"{up.url}/_infermodes/endpoints", headers=given, timeout=10)
        assert listed.status_code == 200, listed.text
        wait_until(lambda: len(outputs(output)) == 100, WAIT * 3, "every async output")
        wait_until(lambda: backlog_total(up, "abalone-async") == 0, WAIT,
                   "no backlog")  # fmt: skip
        found = outputs(output)
        assert set(found) == set(accepted)
        booster = abalone_model.booster()
        for inference_id, request_rows in accepted.items():
            expected = booster.inplace_predict(request_rows)  # type: ignore[attr-defined]
            np.testing.assert_allclose(found[inference_id], expected, rtol=1e-6)
        assert not list(output.glob("*.error"))


def test_async_requests_are_processed_under_a_state_dir_whose_name_a_url_would_cut(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The workers find the queue by its URL: under ``C# work/.infermodes`` they opened
    ``C`` (what precedes the fragment), a queue of their own, and an accepted request waited
    for ever while its pool showed ready."""
    files = [manifest("async", abalone_model.tarball, tmp_path)]
    state = tmp_path / "C# work?v=1 100%" / "state"
    with running_up(state, files, tmp_path / "up.log") as up:
        accepted = accept_async(up, abalone_model.test_rows, 1, 3)
        wait_until(lambda: set(outputs(tmp_path / "async" / "output")) == set(accepted), WAIT,
                   "the async output")  # fmt: skip
    assert not (tmp_path / "C").exists()


def test_notifications_prints_every_one_past_the_apis_page(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The API answers 1,000 at a time; the command reads on until there are no more."""
    count = NOTIFICATIONS_PER_CALL + 5
    files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1,
                      maxConcurrentInvocationsPerInstance=4)]  # fmt: skip
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        rows = np.resize(abalone_model.test_rows, (count, abalone_model.test_rows.shape[1]))
        accepted = accept_async(up, rows, count, 1)
        output = tmp_path / "async" / "output"
        wait_until(lambda: len(outputs(output)) == count, WAIT * 3, "every async output")
        wait_until(lambda: backlog_total(up, "abalone-async") == 0, WAIT, "no backlog")
        printed = cli(up, "notifications", "abalone-async.success")
        padded = {"after": "0" * 25 + "1"}  # 1, written with zeros: not past every id
        answer = httpx.get(f"{up.url}/_infermodes/notifications", params=padded,
                           headers=up.headers).json()  # fmt: skip
        assert len(answer["items"]) == NOTIFICATIONS_PER_CALL, len(answer["items"])
    assert printed.returncode == 0, printed.stderr
    items = [json.loads(line) for line in printed.stdout.splitlines()]
    assert sorted(item["body"]["inferenceId"] for item in items) == sorted(accepted)
    assert [item["id"] for item in items] == sorted({item["id"] for item in items})


def test_a_changed_realtime_spec_is_served_throughout_its_rollout(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Applying another spec to a realtime endpoint keeps its old model servers serving (the
    endpoint ``Updating``, the old ones listed as outgoing) until as many of the new spec's are
    ready, as a rollout keeps the old pods: no request sent meanwhile is refused, the old
    servers go, and the endpoint keeps the replicas it had (two, though the new spec's
    minimum is one). The change is one the servers run (their ``workers``)."""
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=2, maxReplicas=2)]
    (tmp_path / "v2").mkdir()
    changed = manifest("realtime", abalone_model.tarball, tmp_path / "v2", minReplicas=1,
                       maxReplicas=2, workers=2, scaling=BUSY_SCALING)  # fmt: skip
    body = to_csv(abalone_model.test_rows[:1])

    def pids() -> set[int]:
        return {process["pid"] for process in up.status("abalone")["processes"]}

    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: up.status("abalone")["readyReplicas"] == 2, WAIT, "ready replicas")
        old = pids()
        with steady_requests(up, "abalone", body) as answers:
            wait_until(lambda: len(answers) >= 5, WAIT, "answers before the change")
            applied = cli(up, "apply", "-f", str(changed))
            assert applied.returncode == 0, applied.stderr
            rolling = up.status("abalone")  # the operator's reason (up said "Updating")
            assert (rolling["phase"], rolling["reason"]) == ("Updating", "RollingOut"), rolling
            replaced = lambda status: (  # noqa: E731
                status["phase"] == "InService" and not old & pids()
            )
            assert desired_until_served(up, "abalone", replaced) == {2}
            seen = len(answers)
            wait_until(lambda: len(answers) >= seen + 5, WAIT, "answers after the change")
            status = up.status("abalone")
            assert (status["desiredReplicas"], status["readyReplicas"]) == (2, 2), status
            assert status["reason"] == "AllReplicasReady", status  # up said "Ready"
    assert set(answers) == {200}, collections.Counter(answers)


def test_a_change_of_scaling_alone_keeps_the_processes_as_a_cluster_keeps_its_pods(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A spec whose processes would run as before (new bounds, a new scaling target, a
    label) keeps them, as a Deployment whose pod template did not change rolls nothing out:
    the same model servers serve on, the endpoint stays ``InService`` and scales to the new
    minimum; a serverless endpoint's ``maxConcurrency`` keeps its warm server."""
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=2),
             manifest("serverless", abalone_model.tarball, tmp_path, maxConcurrency=2)]  # fmt: skip
    (tmp_path / "v2").mkdir()
    realtime = document("realtime", abalone_model.tarball, tmp_path, minReplicas=2,
                        maxReplicas=3, scaling={"target": 5})  # fmt: skip
    realtime["metadata"]["labels"] = {"team": "shellfish"}
    serverless = document("serverless", abalone_model.tarball, tmp_path, maxConcurrency=3)
    changed = tmp_path / "v2" / "both.yaml"
    changed.write_text(yaml.safe_dump_all([realtime, serverless]))
    body = to_csv(abalone_model.test_rows[:1])

    def pids(name: str) -> set[int]:
        return {process["pid"] for process in up.status(name)["processes"]}

    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        # a serverless endpoint is InService once its model has loaded (Creating until then)
        both = lambda: {up.status(name)["phase"] for name in ("abalone", "abalone-serverless")}  # noqa: E731
        wait_until(lambda: both() == {"InService"}, WAIT, "both in service")
        assert up.invoke("abalone-serverless", body).status_code == 200
        (server,) = pids("abalone-serverless")
        (first,) = pids("abalone")
        applied = cli(up, "apply", "-f", str(changed))
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.split() == [
            "inferenceendpoint/abalone", "configured",
            "inferenceendpoint/abalone-serverless", "configured",
        ], applied.stdout  # fmt: skip
        wait_until(lambda: up.status("abalone")["readyReplicas"] == 2, WAIT, "the new minimum")
        status = up.status("abalone")
        assert (status["phase"], first in pids("abalone")) == ("InService", True), status
        assert up.invoke("abalone-serverless", body).status_code == 200
        assert pids("abalone-serverless") == {server}
        assert up.status("abalone-serverless")["phase"] == "InService"
        assert up.endpoint("abalone")["spec"]["realtime"]["maxReplicas"] == 3


def test_an_async_pool_under_up_scales_and_rolls_out_as_the_operator_says(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """As the operator says them (``status.pool_starting``, one rule): a new pool is Creating,
    StartingWorkers, until its initial worker is ready; a change of initialReplicas alone (its
    workers run as before) is a scale, InService throughout; a new spec, whose workers ``up``
    all starts again, is Updating, RollingOut, until every worker it wants is ready, as a
    Deployment's rollout. ``up`` said Updating, StartingWorkers, for both changes."""
    name = "abalone-async"
    bounds = {"minReplicas": 0, "maxReplicas": 3}
    files = [manifest("async", abalone_model.tarball, tmp_path, initialReplicas=1, **bounds)]
    changes = {}
    for folder, block in [("scaled", {"initialReplicas": 2}),
                          ("respec", {"initialReplicas": 2,
                                      "maxConcurrentInvocationsPerInstance": 2})]:  # fmt: skip
        (tmp_path / folder).mkdir()
        changes[folder] = tmp_path / folder / "async.yaml"
        changed = document("async", abalone_model.tarball, tmp_path, **bounds, **block)
        changes[folder].write_text(yaml.safe_dump(changed))

    def seen_until(up: Up, ready: int, what: str) -> list[tuple[str, str]]:
        """(phase, reason) of every look until ``ready`` workers are ready, InService."""
        seen: list[tuple[str, str]] = []

        def looked() -> bool:
            status = up.status(name)
            seen.append((status["phase"], status["reason"]))
            return status["phase"] == "InService" and status["readyReplicas"] == ready

        wait_until(looked, WAIT, what)
        return seen

    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        started = seen_until(up, 1, "the initial worker")
        assert {phase for phase, _ in started} <= {"Creating", "InService"}, started
        assert ("Creating", "StartingWorkers") in started, started
        (first,) = [p["pid"] for p in up.running(name)]
        applied = cli(up, "apply", "-f", str(changes["scaled"]))
        assert applied.stdout.split() == [f"inferenceendpoint/{name}", "configured"], applied
        scaled = seen_until(up, 2, "the second worker")
        assert {phase for phase, _ in scaled} == {"InService"}, scaled
        assert first in [p["pid"] for p in up.running(name)]  # ran as before: a scale
        applied = cli(up, "apply", "-f", str(changes["respec"]))
        assert applied.returncode == 0, applied.stderr
        rolled = seen_until(up, 2, "the new spec's workers")
        assert first not in [p["pid"] for p in up.running(name)]  # all started again
        assert ("Updating", "RollingOut") in rolled, rolled
        assert {phase for phase, _ in rolled} <= {"Updating", "InService"}, rolled
        assert "StartingWorkers" not in {reason for _, reason in rolled}, rolled
        # in service, how the pool stands, as the operator says it (up said its scaling
        # decision's reason: InitialReplicas, Steady, Starting right after an update)
        standing = {reason for phase, reason in started + scaled + rolled if phase == "InService"}
        assert standing <= {"Idle", "Processing"}, (started, scaled, rolled)
        assert {reason for phase, reason in rolled if phase == "Updating"} == {"RollingOut"}


def test_an_update_whose_model_cannot_load_keeps_the_previous_spec_serving(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A realtime update to a model that cannot load: the endpoint stays ``Updating`` on the
    previous spec's servers (it used to go Failed and refuse every request), the reason says
    why, and so again after a restart of ``up`` (which used to bring back the failed spec
    alone: Failed, nothing serving); the fixed spec rolls over from those servers and keeps
    their number (two, though its minimum is one), and no request is refused."""
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=2, maxReplicas=2)]
    for version in ("broken", "fixed"):
        (tmp_path / version).mkdir()
    broken = manifest("realtime", tmp_path / "broken" / "missing.tar.gz", tmp_path / "broken",
                      minReplicas=1, maxReplicas=2)  # fmt: skip
    fixed = manifest("realtime", abalone_model.tarball, tmp_path / "fixed", minReplicas=1,
                     maxReplicas=2, scaling=BUSY_SCALING)  # fmt: skip
    body = to_csv(abalone_model.test_rows[:1])
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: up.status("abalone")["readyReplicas"] == 2, WAIT, "ready replicas")
        assert cli(up, "apply", "-f", str(broken)).returncode == 0
        saved = tmp_path / "state" / "endpoints" / "abalone.json"
        for when in ("the update to fail", "the update to fail again after a restart"):
            failed = lambda: up.status("abalone")["reason"] == "ModelLoadFailed"  # noqa: E731
            wait_until(failed, WAIT, when)
            status = up.status("abalone")
            assert status["phase"] == "Updating", status
            assert "2 replica(s) of the previous spec still serve" in status["message"], status
            answers = [up.invoke("abalone", body).status_code for _ in range(5)]
            assert answers == [200] * 5
            assert "previous" in json.loads(saved.read_text())
            if when == "the update to fail":
                up.stop()
                up.files = []  # from its state alone
                up.start()
        with steady_requests(up, "abalone", body) as answered:
            assert cli(up, "apply", "-f", str(fixed)).returncode == 0
            back = lambda status: status["phase"] == "InService"  # noqa: E731
            assert desired_until_served(up, "abalone", back) == {2}
            status = up.status("abalone")
            assert (status["desiredReplicas"], status["readyReplicas"]) == (2, 2), status
        assert answered and set(answered) == {200}, collections.Counter(answered)
        wait_until(lambda: "previous" not in json.loads(saved.read_text()), WAIT,
                   "the rollover over: no previous spec to bring back")  # fmt: skip


def test_a_request_during_an_update_from_serverless_at_zero_waits_for_the_new_replica(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A serverless endpoint at zero instances is in service; applying a realtime spec to it
    makes it ``Updating`` (not ``Creating``), so a request sent at once is held until the new
    replica is ready, as a cold start would be, instead of refused with a 400."""
    serverless = document("serverless", abalone_model.tarball, tmp_path)
    realtime = document("realtime", abalone_model.tarball, tmp_path, minReplicas=1)
    realtime["metadata"]["name"] = serverless["metadata"]["name"]
    (tmp_path / "realtime.yaml").write_text(yaml.safe_dump(realtime))
    (tmp_path / "serverless.yaml").write_text(yaml.safe_dump(serverless))
    name = serverless["metadata"]["name"]
    with running_up(tmp_path / "state", [tmp_path / "serverless.yaml"], tmp_path / "up.log") as up:
        wait_until(lambda: up.status(name)["phase"] == "InService", WAIT, "in service at zero")
        assert up.running(name) == []
        at_zero = up.status(name)  # as the operator says it (up said "Ready")
        assert (at_zero["reason"], at_zero["message"]) == (
            "ScaledToZero",
            "no replicas; a request starts one",
        ), at_zero
        applied = cli(up, "apply", "-f", str(tmp_path / "realtime.yaml"))
        assert applied.returncode == 0, applied.stderr
        updating = up.status(name)  # a rollout over no replica: the operator's reason
        assert (updating["phase"], updating["reason"]) == ("Updating", "RollingOut"), updating
        answer = up.invoke(name, to_csv(abalone_model.test_rows[:1]))
        assert answer.status_code == 200, answer.text
        wait_until(lambda: up.status(name)["phase"] == "InService", WAIT, "in service again")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_a_killed_up_removes_its_orphans_when_it_starts_again(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """SIGKILL leaves ``up`` no time to stop its model server; the next ``up`` on the same
    state dir kills it (by the PID and start time it recorded) and serves again."""
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1)]
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: up.status("abalone")["readyReplicas"] == 1, WAIT, "a ready replica")
        orphan = up.running("abalone")[0]["pid"]
        up.stop(signal.SIGKILL)
        assert alive(orphan)
        up.start()
        wait_until(lambda: not alive(orphan), WAIT, "the orphan to be killed")
        assert "left running by a previous infermodes up" in up.log
        wait_until(lambda: up.status("abalone")["readyReplicas"] == 1, WAIT, "a ready replica")
        assert up.invoke("abalone", to_csv(abalone_model.test_rows[:2])).status_code == 200


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT], ids=["SIGHUP", "SIGQUIT"])
def test_a_hangup_or_quit_stops_up_and_its_children_as_sigterm_does(
    abalone_model: AbaloneModel, tmp_path: Path, signum: signal.Signals
) -> None:
    """Closing the terminal ``up`` runs in sends it SIGHUP, Ctrl-\\ in it SIGQUIT (its
    children, each in its own session, get neither): their default actions ended ``up`` at once
    and left the model server running on its port. The endpoints stay in the state dir."""
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1)]
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: up.status("abalone")["readyReplicas"] == 1, WAIT, "a ready replica")
        server = up.running("abalone")[0]["pid"]
        assert up.proc is not None
        up.proc.send_signal(signum)
        assert up.proc.wait(WAIT) == 0
        assert not alive(server)
        assert "stopping 1 process(es)" in up.log
        up.files = []  # started again without the manifest: the endpoint is the state dir's
        up.start()
        wait_until(lambda: up.status("abalone")["readyReplicas"] == 1, WAIT, "a ready replica")


def test_up_stops_with_a_line_naming_it_when_its_state_dir_is_removed(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``rm -rf .infermodes`` while ``up`` ran took its queue file: ``up`` went on accepting
    async requests (202) into the removed file, which no worker would ever open."""
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1)]
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: up.status("abalone")["readyReplicas"] == 1, WAIT, "a ready replica")
        server = up.running("abalone")[0]["pid"]
        assert up.proc is not None
        shutil.rmtree(up.state_dir)
        assert up.proc.wait(WAIT) == 1
        assert not alive(server)
        assert f"the state dir {up.state_dir} was removed" in up.log


def test_a_signal_while_up_stops_its_children_kills_them_before_up_ends(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A worker stopping finishes what it holds first: here a success webhook that never
    answers. Another SIGTERM meanwhile kills it, and ``up`` ends only then (before, the
    signal's default action ended ``up`` and left the worker running)."""
    hanging = socket.socket()  # accepts connections (the kernel does) and never answers
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)
    webhook = f"http://127.0.0.1:{hanging.getsockname()[1]}/never"
    files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1,
                      notification={"topic": False, "successWebhook": webhook})]  # fmt: skip
    try:
        with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
            accept_async(up, abalone_model.test_rows, 1, 2)
            output = tmp_path / "async" / "output"
            wait_until(lambda: len(outputs(output)) == 1, WAIT, "the output (then the webhook)")
            worker = up.running("abalone-async")[0]["pid"]
            assert up.proc is not None
            up.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: "stopping 1 process(es)" in up.log, WAIT, "up to stop its worker")
            assert alive(worker)  # still posting its notification
            up.proc.send_signal(signal.SIGTERM)
            assert up.proc.wait(WAIT) == 0
            assert not alive(worker)
            assert "killing them now" in up.log
    finally:
        hanging.close()


def test_a_failed_async_pool_shows_the_requests_that_wait_for_it(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A pool whose model cannot load is ``Failed``, yet its queue takes requests (202) that
    the mended model serves. ``up`` showed none of them (no backlog in the status or in
    ``infermodes get``, no queue metrics, so no HasBacklogWithoutCapacity) where the operator
    shows the figures it read: a caller saw nothing waiting."""
    (tmp_path / "broken").mkdir()
    broken = manifest("async", tmp_path / "broken" / "missing.tar.gz", tmp_path, maxReplicas=1)
    with running_up(tmp_path / "state", [broken], tmp_path / "up.log") as up:
        accepted = accept_async(up, abalone_model.test_rows, 2, 1)  # a worker starts, fails
        labels = '{endpoint="abalone-async",namespace="local"}'
        shown = (f"infermodes_async_approximate_backlog_size{labels} 2.0",
                 f"infermodes_async_has_backlog_without_capacity{labels} 1.0")  # fmt: skip

        def failed_and_shown() -> bool:
            """Polled: between its model's retries the pool is not Failed."""
            status = up.status("abalone-async")
            failed = (status["phase"], status["reason"]) == ("Failed", "ModelLoadFailed")
            if not failed or backlog_total(up, "abalone-async") != 2:
                return False
            metrics = httpx.get(f"{up.url}/metrics", timeout=10.0).text
            return all(line in metrics.splitlines() for line in shown)

        wait_until(failed_and_shown, WAIT, "the waiting requests shown while Failed")

        def listed() -> list[str]:
            return cli(up, "get", "abalone-async").stdout.splitlines()[1].split()[:6]

        expected = ["abalone-async", "async", "Failed", "0", "0", "2"]
        wait_until(lambda: listed() == expected, WAIT, "infermodes get showing the backlog")
        mended = manifest("async", abalone_model.tarball, tmp_path, maxReplicas=1)
        assert cli(up, "apply", "-f", str(mended)).returncode == 0
        output = tmp_path / "async" / "output"
        wait_until(lambda: set(outputs(output)) == set(accepted), WAIT, "every async output")


def test_an_async_worker_under_up_holds_to_its_spec_memory_as_its_pod_would(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``up``'s workers share one cgroup (or none): each took that limit as its own, so a JSON
    input its pod's limit refuses at once (it would be OOM-killed decoding it) was decoded
    under ``up``. The spec's ``resources.memory`` is what both actuators give it."""
    files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1,
                      maxConcurrentInvocationsPerInstance=2,
                      resources={"cpu": "500m", "memory": "200Mi"})]  # fmt: skip
    rows = abalone_model.test_rows.tolist()
    big = json.dumps({"instances": rows * (4_000_000 // len(json.dumps(rows)) + 1)}).encode()
    small = json.dumps({"instances": rows[:3]}).encode()
    output = tmp_path / "async" / "output"
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        url = f"{up.url}/endpoints/abalone-async/async-invocations"
        ids = []
        for body in (big, small):
            answer = httpx.post(url, content=body, timeout=90.0,
                                headers={"content-type": "application/json"})  # fmt: skip
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["InferenceId"])
        failure = output / f"{ids[0]}.error"
        wait_until(lambda: failure.exists() and (output / f"{ids[1]}.out").exists(), WAIT * 2,
                   "the big input's failure and the small one's output")  # fmt: skip
    record = json.loads(failure.read_bytes())
    assert record["reason"] == "PayloadTooLarge", record
    assert "give the worker more memory" in record["message"], record
    expected = abalone_model.booster().inplace_predict(abalone_model.test_rows[:3])
    np.testing.assert_allclose(scores((output / f"{ids[1]}.out").read_text()), expected,
                               rtol=1e-6)  # fmt: skip


@pytest.mark.parametrize("management", [True, False], ids=["management-api", "amqp-only"])
def test_async_on_rabbitmq_with_broker_url(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path, management: bool
) -> None:
    """The same manifest with ``--broker-url``: requests go through RabbitMQ, workers start
    from zero on its backlog, outputs equal the booster's, and the pool goes back to zero.
    Without ``--management-url`` the broker counts no in-flight work: the workers' own counts
    (their metrics ports) let the pool shrink."""
    files = [manifest("async", abalone_model.tarball, tmp_path, maxReplicas=1,
                      scaleInCooldownSeconds=2)]  # fmt: skip
    args: tuple[str, ...] = ("--broker-url", rabbitmq.amqp_url)
    if management:
        args += ("--management-url", rabbitmq.management_url)
    rows = abalone_model.test_rows
    output = tmp_path / "async" / "output"
    with running_up(tmp_path / "state", files, tmp_path / "up.log", args) as up:
        accepted = accept_async(up, rows, 10, 2)
        wait_until(lambda: len(outputs(output)) == 10, WAIT * 2, "every async output")
        found = outputs(output)
        booster = abalone_model.booster()
        for inference_id, request_rows in accepted.items():
            expected = booster.inplace_predict(request_rows)  # type: ignore[attr-defined]
            np.testing.assert_allclose(found[inference_id], expected, rtol=1e-6)
        assert not (tmp_path / "state" / "queue.db").exists()
        assert "RabbitMQ" in cli(up, "notifications").stderr
        wait_until(lambda: up.running("abalone-async") == [], WAIT, "the pool back at zero")
        assert up.status("abalone-async")["backlog"]["inFlight"] == 0


def test_up_counts_an_async_worker_ready_only_while_it_consumes(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """With ``--broker-url``, a worker that lost its broker runs but is not ready (``up`` asks
    its ``/readyz``, as the kubelet asks a worker pod's); once the broker is back it consumes
    and is ready again, and requests accepted then complete."""
    files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1)]
    rows = abalone_model.test_rows
    output = tmp_path / "async" / "output"
    args = ("--broker-url", rabbitmq.amqp_url)
    with running_up(tmp_path / "state", files, tmp_path / "up.log", args) as up:

        def replicas() -> tuple[int, int]:
            status = up.status("abalone-async")
            return status.get("replicas", 0), status.get("readyReplicas", 0)

        wait_until(lambda: replicas() == (1, 1), WAIT, "one worker, consuming")
        rabbitmq.stop()
        try:
            wait_until(lambda: replicas() == (1, 0), WAIT, "the worker running, not ready")
            assert [p["ready"] for p in up.running("abalone-async")] == [False]
        finally:
            rabbitmq.start()
        wait_until(lambda: replicas() == (1, 1), WAIT, "the worker consuming again")
        accepted = accept_async(up, rows, 3, 2)
        wait_until(lambda: set(outputs(output)) == set(accepted), WAIT, "every async output")


def test_a_scale_in_under_up_stops_the_idle_worker_not_the_newest_busy_one(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A pool of two on RabbitMQ, one request at a time each: the older worker took the first
    request, the newer one (started for the second) holds the second, both ready. Once the
    first ended, the backlog asks for one worker: ``up`` stops the older, idle one, as the
    operator's deletion costs have the ReplicaSet do (it stopped the newest, the busy one).
    The held request then completes once, on the worker kept."""
    name, released = "abalone-async", {"first": threading.Event(), "second": threading.Event()}

    def holds(path: str) -> threading.Event | None:
        return released.get(path.rsplit("/", 1)[-1].removesuffix(".csv"))

    files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=2,
                      maxConcurrentInvocationsPerInstance=1, targetBacklogPerInstance=1,
                      scaleInCooldownSeconds=1, notification={"topic": True})]  # fmt: skip
    notes = Notifications(rabbitmq, name).declare()
    args = ("--broker-url", rabbitmq.amqp_url)
    with (
        holding_s3_server(holds) as s3,
        mock.patch.dict("os.environ", s3.env),
        running_up(tmp_path / "state", files, tmp_path / "up.log", args) as up,
    ):
        client: Any = s3.client()
        client.create_bucket(Bucket="inputs")
        for request in released:
            client.put_object(Bucket="inputs", Key=f"{request}.csv",
                              Body=to_csv(abalone_model.test_rows[:1]))  # fmt: skip

        def invoke(request: str) -> str:
            answer = httpx.post(f"{up.url}/endpoints/{name}/async-invocations", timeout=30,
                                headers={LOCATION: f"s3://inputs/{request}.csv"})  # fmt: skip
            assert answer.status_code == 202, answer.text
            return str(answer.json()["InferenceId"])

        def in_flight() -> int | None:
            found: int | None = (up.status(name).get("backlog") or {}).get("inFlight")
            return found

        try:
            wait_until(lambda: [p["ready"] for p in up.running(name)] == [True], WAIT,
                       "one worker consuming")  # fmt: skip
            (older,) = up.running(name)
            ids = {invoke("first")}
            wait_until(lambda: in_flight() == 1, WAIT, "the older worker to hold the first")
            ids.add(invoke("second"))
            wait_until(lambda: in_flight() == 2 and len(up.running(name)) == 2, WAIT,
                       "a second worker, holding the second request")  # fmt: skip
            # ready by its /readyz too: one not yet probed ready would go first, as an unready pod
            wait_until(lambda: [p["ready"] for p in up.running(name)] == [True, True], WAIT,
                       "the second worker ready")  # fmt: skip
            (newer,) = [p for p in up.running(name) if p["key"] != older["key"]]
            released["first"].set()
            wait_until(lambda: len(up.status(name)["processes"]) == 1, WAIT, "the scale-in")
            assert [p["key"] for p in up.status(name)["processes"]] == [newer["key"]]
            assert in_flight() == 1  # the second request, still held
            stopping = "stopping after in-flight requests"  # the worker's line at SIGTERM
            wait_until(lambda: stopping in Path(older["log"]).read_text(), WAIT,
                       "the idle worker to stop")  # fmt: skip
            released["second"].set()
            notes.wait_for(ids, "Completed", WAIT)
            assert stopping not in Path(newer["log"]).read_text()  # the busy one runs on
        finally:  # a held request would keep its worker, and up, for two minutes
            for event in released.values():
                event.set()
    assert {i: notes.ids("Completed")[i] for i in ids} == {i: 1 for i in ids}
    output = outputs(tmp_path / "async" / "output")
    assert set(output) == ids


def test_a_scale_in_under_up_stops_a_worker_not_ready_before_a_ready_idle_one(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A pool of two idle workers; the older one frozen (SIGSTOP: hung, its ``/readyz`` and
    metrics unanswered) is running but not ready. Lowered to one worker, the pool stops the
    frozen one, as a ReplicaSet removes an unready pod before a ready one whatever its
    deletion cost (``up`` took a worker that cannot say for a busy one and stopped the ready
    idle one). The kept worker consumes on: a request accepted then completes."""
    name = "abalone-async"
    files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=2, maxReplicas=2)]
    lowered = tmp_path / "lowered" / "async.yaml"
    lowered.parent.mkdir()
    lowered.write_text(yaml.safe_dump(document("async", abalone_model.tarball, tmp_path,
                                               minReplicas=1, maxReplicas=1)))  # fmt: skip
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: [p["ready"] for p in up.running(name)] == [True, True], WAIT,
                   "two workers consuming")  # fmt: skip
        frozen, kept = up.running(name)
        os.kill(frozen["pid"], signal.SIGSTOP)
        try:
            wait_until(lambda: [p["ready"] for p in up.running(name)] == [False, True], WAIT,
                       "the frozen worker not ready")  # fmt: skip
            applied = cli(up, "apply", "-f", str(lowered))
            assert applied.returncode == 0, applied.stderr
            wait_until(lambda: len(up.status(name)["processes"]) == 1, WAIT, "the scale-in")
            assert [p["key"] for p in up.status(name)["processes"]] == [kept["key"]]
        finally:
            os.kill(frozen["pid"], signal.SIGCONT)
        stopping = "stopping after in-flight requests"  # the worker's line at SIGTERM
        wait_until(lambda: stopping in Path(frozen["log"]).read_text(), WAIT,
                   "the frozen worker to stop once it runs again")  # fmt: skip
        accepted = accept_async(up, abalone_model.test_rows, 1, 1)
        wait_until(lambda: set(outputs(tmp_path / "async" / "output")) == set(accepted), WAIT,
                   "the request's output, from the kept worker")  # fmt: skip
        assert stopping not in Path(kept["log"]).read_text()
        assert [p["pid"] for p in up.running(name)] == [kept["pid"]]


def children_of(pid: int) -> dict[int, str]:
    """PID -> state letter (R, S, Z...) of each child of ``pid``, from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found[int(stat.parent.name)] = fields[0]
    return found


def test_serverless_servers_are_forked_from_the_zygote_adopted_and_reaped(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A cold start forks the model server from ``up``'s pre-imported zygote; the server is
    ``up``'s own child (subreaper), so a SIGKILL of it is seen as exit -9 and leaves no zombie,
    and the next request is served by its restart. Stopping ``up`` stops the zygote too. (The
    server that loaded the model before the endpoint was InService is forked too.)"""
    files = [manifest("serverless", abalone_model.tarball, tmp_path, idleTimeoutSeconds=10)]
    body = to_csv(abalone_model.test_rows[:3])
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        assert up.proc is not None
        parent = up.proc.pid
        wait_until(lambda: "model-server zygote ready" in up.log, WAIT, "the zygote")
        at_zero = lambda: not up.running("abalone-serverless")  # noqa: E731
        wait_until(lambda: up.status("abalone-serverless")["phase"] == "InService" and at_zero(),
                   WAIT, "its model loaded, and no process left")  # fmt: skip
        # the loading server has exited too (stopped, it drains): up's one child is the zygote
        wait_until(lambda: len(children_of(parent)) == 1, WAIT, "the loading server's exit")
        assert up.invoke("abalone-serverless", body).status_code == 200
        ((server, key),) = [(p["pid"], p["key"]) for p in up.running("abalone-serverless")]
        assert f"{key} started (pid {server}, forked)" in up.log
        assert server in children_of(parent)
        (zygote,) = set(children_of(parent)) - {server}
        assert "infermodes.local.zygote" in Path(f"/proc/{zygote}/cmdline").read_text()
        os.killpg(server, signal.SIGKILL)
        wait_until(lambda: any("exited with -9" in event for event in
                               up.status("abalone-serverless")["events"]), WAIT,
                   "the killed server to be seen")  # fmt: skip
        wait_until(lambda: "Z" not in children_of(parent).values(), WAIT, "no zombie")
        assert up.invoke("abalone-serverless", body).status_code == 200
        assert up.log.count(f"{key} started (pid") == 2  # restarted
        assert up.log.count(", forked)") == 3  # the loading one, the cold start, its restart
        up.stop()
        assert not alive(zygote)


def test_a_model_server_killed_alone_takes_its_forked_workers_with_it(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The OOM killer's way: SIGKILL to the server's parent process only. Its forked workers
    would go on answering on the old port, after ``up`` too; they are killed with it, and the
    restarted server serves."""
    files = [manifest("realtime", abalone_model.tarball, tmp_path, workers=2)]
    body = to_csv(abalone_model.test_rows[:3])
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: up.status("abalone")["phase"] == "InService", WAIT, "InService")
        (server,) = [p["pid"] for p in up.running("abalone")]
        wait_until(lambda: len(children_of(server)) == 2, WAIT, "the server's two workers")
        workers = list(children_of(server))
        os.kill(server, signal.SIGKILL)
        wait_until(lambda: not any(alive(worker) for worker in workers), WAIT,
                   "the killed server's workers to go with it")  # fmt: skip
        wait_until(lambda: up.status("abalone")["phase"] == "InService" and up.running("abalone")
                   and up.running("abalone")[0]["pid"] != server, WAIT, "the restart")  # fmt: skip
        answer = up.invoke("abalone", body)
        assert answer.status_code == 200, answer.text


def test_an_endpoint_applied_before_its_model_serves_once_the_model_is_there(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """As on the cluster, where the kubelet restarts a pod whose model cannot load: the
    endpoint is ``Failed`` with the reason, and once the model is uploaded it serves, without
    being applied again (it was Failed for good under ``up``)."""
    files = [manifest("realtime", tmp_path / "later.tar.gz", tmp_path)]
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        failed = lambda: up.status("abalone")["reason"] == "ModelLoadFailed"  # noqa: E731
        wait_until(failed, WAIT, "the model load to fail")
        status = up.status("abalone")
        assert status["phase"] == "Failed" and "later.tar.gz" in status["message"], status
        shutil.copy(abalone_model.tarball, tmp_path / "later.tar.gz")
        serving = lambda: up.status("abalone")["phase"] == "InService"  # noqa: E731
        wait_until(serving, WAIT, "the endpoint to start again and serve")
        answer = up.invoke("abalone", to_csv(abalone_model.test_rows[:2]))
        assert answer.status_code == 200, answer.text
        assert "started again: its model could not load" in up.log


def test_a_serverless_endpoint_loads_its_model_before_it_is_in_service_then_goes_to_zero(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """r62 D2: a serverless endpoint at zero never loaded its model, so one whose artifact is
    missing said InService (CreateEndpoint's waiter passed) until the first request got a 400.
    Before any request now, one server loads the model: a missing artifact makes the endpoint
    Failed naming it, never InService; a good one's server starts and is ready, the endpoint
    InService, and at zero (no process) at once, not after its idleTimeoutSeconds."""
    missing = document("serverless", tmp_path / "missing.tar.gz", tmp_path)
    missing["metadata"]["name"] = "abalone-missing"
    good = document("serverless", abalone_model.tarball, tmp_path, idleTimeoutSeconds=600)
    (tmp_path / "both.yaml").write_text(yaml.safe_dump_all([missing, good]))
    seen: dict[str, set[str]] = {"abalone-missing": set(), "abalone-serverless": set()}

    def phase_of(name: str) -> str:
        status = up.status(name)
        seen[name].add(f"{status['phase']}/{status['reason']}")
        return str(status["phase"])

    with running_up(tmp_path / "state", [tmp_path / "both.yaml"], tmp_path / "up.log") as up:
        wait_until(lambda: phase_of("abalone-missing") == "Failed", WAIT, "the load to fail")
        status = up.status("abalone-missing")
        assert status["reason"] == "ModelLoadFailed", status
        assert "missing.tar.gz" in status["message"], status
        assert not any(s.startswith("InService") for s in seen["abalone-missing"]), seen
        wait_until(lambda: phase_of("abalone-serverless") == "InService", WAIT, "in service")
        assert "abalone-serverless/server-0 started (pid" in up.log  # its model was loaded

        def at_zero() -> bool:
            status = up.status("abalone-serverless")
            assert status["phase"] == "InService", status  # in service throughout
            return status["desiredReplicas"] == 0 and not up.running("abalone-serverless")

        wait_until(at_zero, WAIT, "no process left (well within the 600 s idle timeout)")
        assert up.status("abalone-serverless")["reason"] == "ScaledToZero"
        assert (
            up.invoke("abalone-serverless", to_csv(abalone_model.test_rows[:1])).status_code == 200
        )
        assert up.status("abalone-missing")["phase"] == "Failed"


def test_a_request_held_for_a_serverless_endpoint_whose_model_cannot_load_is_released(
    abalone_model: AbaloneModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway would hold it 300 s and the client waits at most 60: only the endpoint's
    turn to Failed, seen while the request is held, answers it in time, with the 400 a later
    request gets, naming why. (Its model loaded at creation, then went missing: at zero, the
    cold start is the first to find out.)"""
    monkeypatch.setenv("INFERMODES_GATEWAY_INVOCATION_TIMEOUT_SECONDS", "300")  # read by up
    shutil.copy(abalone_model.tarball, tmp_path / "missing.tar.gz")
    files = [manifest("serverless", tmp_path / "missing.tar.gz", tmp_path)]
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        at_zero = lambda: not up.running("abalone-serverless")  # noqa: E731
        wait_until(lambda: up.status("abalone-serverless")["phase"] == "InService" and at_zero(),
                   WAIT, "its model loaded, and no process left")  # fmt: skip
        (tmp_path / "missing.tar.gz").unlink()
        url = f"{up.url}/endpoints/abalone-serverless/invocations"
        held = httpx.post(url, content=b"1,2", headers={"content-type": "text/csv"}, timeout=60)
        assert held.status_code == 400, held.text
        assert held.headers["x-amzn-errortype"] == "ValidationError"
        assert "is Failed (ModelLoadFailed), not InService" in held.json()["message"]
        assert up.status("abalone-serverless")["phase"] == "Failed"
        later = up.invoke("abalone-serverless", b"1,2")
        assert (later.status_code, later.json()) == (400, held.json())
        # the model put back in place, the server its retry keeps trying loads it
        shutil.copy(abalone_model.tarball, tmp_path / "missing.tar.gz")
        rows = to_csv(abalone_model.test_rows[:2])
        served = lambda: up.invoke("abalone-serverless", rows).status_code == 200  # noqa: E731
        wait_until(served, WAIT, "the model put back to be served")


def test_a_serverless_endpoint_whose_model_is_put_back_serves_again_by_itself(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Its model missing as it is created, the endpoint is Failed and its requests refused;
    once the model is back, its retry (no request could start a server: each is refused) loads
    it, and requests are served again without the endpoint being applied again."""
    model = tmp_path / "model.tar.gz"
    files = [manifest("serverless", model, tmp_path)]
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        failed = lambda: up.status("abalone-serverless")["phase"] == "Failed"  # noqa: E731
        wait_until(failed, WAIT, "its model's load to fail before any request")
        refused = up.invoke("abalone-serverless", to_csv(abalone_model.test_rows[:1]))
        assert refused.status_code == 400, refused.text
        assert "is Failed (ModelLoadFailed)" in refused.json()["message"]
        shutil.copy(abalone_model.tarball, model)
        served = lambda: up.invoke("abalone-serverless", b"1,2").status_code == 424  # noqa: E731
        wait_until(served, WAIT, "a request to reach the model again (its 424 for 2 features)")
        answer = up.invoke("abalone-serverless", to_csv(abalone_model.test_rows[:2]))
        assert answer.status_code == 200, answer.text


def test_a_request_held_for_a_serverless_server_that_keeps_crashing_is_released(
    abalone_model: AbaloneModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model server that exits at once at each start, not for its model (here: a setting
    in ``up``'s environment, which its processes get, that it refuses): the endpoint turns
    ``Failed``, ``ContainerCrashing``, as the operator's does for a pod that keeps crashing,
    before any request (its first server, which would load the model, is the one crashing),
    and a request gets the 400 naming it rather than a 503 at the timeout."""
    monkeypatch.setenv("INFERMODES_GATEWAY_INVOCATION_TIMEOUT_SECONDS", "300")  # read by up
    monkeypatch.setenv("INFERMODES_SERVE_MAX_ROWS", "-1")
    files = [manifest("serverless", abalone_model.tarball, tmp_path)]
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        failed = lambda: up.status("abalone-serverless")["phase"] == "Failed"  # noqa: E731
        wait_until(failed, WAIT, "the endpoint to fail before any request")
        url = f"{up.url}/endpoints/abalone-serverless/invocations"
        held = httpx.post(url, content=to_csv(abalone_model.test_rows[:1]),
                          headers={"content-type": "text/csv"}, timeout=60)  # fmt: skip
        assert held.status_code == 400, held.text
        assert "is Failed (ContainerCrashing), not InService" in held.json()["message"]
        status = up.status("abalone-serverless")
        assert (status["phase"], status["reason"]) == ("Failed", "ContainerCrashing"), status
        assert "abalone-serverless/server-0 keeps crashing: exited with 1" in status["message"]


INPUTS = 12_000  # objects: seconds of work for the two instances, so up sees them run


def test_a_batch_job_running_when_up_stops_runs_on_after_its_restart(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``up`` stopped (SIGTERM) while its instances work: they stop and say so; the restart
    runs them again (what they wrote is skipped) and the job completes with every output. It
    used to read their "Stopped" summaries as ended and say Completed, most inputs untouched.
    While they run, the job's progress is theirs so far (it was 0/0 until they ended)."""
    inputs = tmp_path / "batch" / "input"
    inputs.mkdir(parents=True)
    rows = abalone_model.test_rows[:2]
    for number in range(INPUTS):
        (inputs / f"part-{number:05d}.csv").write_bytes(to_csv(rows))
    files = [manifest("batch", abalone_model.tarball, tmp_path)]
    output = tmp_path / "batch" / "output"
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: len(list(output.glob("*.out"))) >= 20, WAIT, "the first outputs")
        # its progress while the instances run (their metrics), not 0/0 until they end
        seen: list[dict[str, int]] = []

        def running_progress() -> bool:
            status = up.status("abalone-batch")
            seen.append(status.get("progress") or {})
            return status["phase"] != "InProgress" or seen[-1].get("objectsDone", 0) > 0

        wait_until(running_progress, WAIT, "progress while running", interval=0.2)
        assert seen[-1]["objectsTotal"] == INPUTS and 0 < seen[-1]["objectsDone"] < INPUTS, seen
        up.stop()
        summaries = list((tmp_path / "state" / "batch" / "abalone-batch").glob("summary-*.json"))
        states = {json.loads(path.read_text())["state"] for path in summaries}
        written = len(list(output.glob("*.out")))
        assert states == {"Stopped"} and written < INPUTS, (states, written)  # stopped midway
        up.files = []  # from its state alone
        up.start()
        ended = lambda: up.status("abalone-batch")["phase"] in ("Completed", "Failed")  # noqa: E731
        wait_until(ended, WAIT * 3, "the job to end")
        status = up.status("abalone-batch")
        assert status["phase"] == "Completed", status
        end_time = status["endTime"]
        up.stop()
        up.start()  # its end time is the job's, not the restart's (it was only in memory)
        wait_until(ended, WAIT, "the job to show its outcome again")
        assert up.status("abalone-batch")["endTime"] == end_time
    outs = sorted(output.glob("*.out"))
    assert len(outs) == INPUTS
    expected = abalone_model.booster().inplace_predict(rows)  # type: ignore[attr-defined]
    for out in outs[::1000]:
        np.testing.assert_allclose(np.loadtxt(out, delimiter=","), expected, rtol=1e-6)


def completed_after_a_retry(up: Up, output: Path, texts: dict[str, bytes], booster: Any) -> None:
    """The batch job ends Completed, its instance 0 having run once more, and each input's
    output holds the booster's score of each of its records, once and in order."""
    ended = lambda: up.status("abalone-batch")["phase"] != "InProgress"  # noqa: E731
    wait_until(ended, WAIT * 3, "the job to end")
    status = up.status("abalone-batch")
    assert status["phase"] == "Completed", status
    assert "abalone-batch/instance-0 runs again (retry 1 of 2)" in str(status["events"])
    for name, text in texts.items():
        np.testing.assert_array_equal(
            scores_of((output / f"{name}.out").read_bytes()), expected_scores(booster, text)
        )


def test_a_batch_instance_killed_midway_runs_again_and_the_job_completes(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """An instance SIGKILLed (the OOM killer) ends without a summary: ``up`` failed the whole
    job ("instance 0 exited with -9 without a summary") where the operator's Job retries the
    index. Now it runs again, removes what it left half written, skips what it wrote and the
    job completes: every record of every input in the outputs once, in order."""
    inputs = tmp_path / "batch" / "input"
    inputs.mkdir(parents=True)
    texts = {f"part-{i}.csv": csv_text(sample_rows(abalone_model.test_rows, 150_000, i))
             for i in range(4)}  # fmt: skip
    for name, text in texts.items():
        (inputs / name).write_bytes(text)
    files = [manifest("batch", abalone_model.tarball, tmp_path, batchStrategy="SingleRecord")]
    output = tmp_path / "batch" / "output"
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: any(output.glob(".*.partial")), WAIT, "an output in progress")
        [first] = [p for p in up.running("abalone-batch") if p["key"].endswith("instance-0")]
        os.kill(first["pid"], signal.SIGKILL)
        completed_after_a_retry(up, output, texts, abalone_model.booster())
    assert [p.name for p in output.iterdir() if p.name.startswith(".")] == []


def test_a_batch_instance_whose_worker_process_dies_runs_again_and_the_job_completes(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A worker process of an instance (JSON with maxConcurrentTransforms 2 runs in worker
    processes) killed by the OOM killer ended the instance with exit 2, "could not start",
    which no retry follows: the job Failed. It is the instance's memory, as when the OOM
    killer takes the instance itself: now it runs again and the job completes, every record
    in the outputs once."""
    inputs = tmp_path / "batch" / "input"
    inputs.mkdir(parents=True)
    texts = {f"part-{i}.jsonl": csv_text(sample_rows(abalone_model.test_rows, 60_000, i))
             for i in range(2)}  # fmt: skip
    for name, text in texts.items():  # each CSV row a JSON array of the same numbers
        (inputs / name).write_bytes(b"".join(b"[%s]\n" % row for row in text.splitlines()))
    jsonlines = {"uri": f"file://{inputs}/", "contentType": "application/jsonlines"}
    block = {"instanceCount": 1, "maxConcurrentTransforms": 2, "maxPayloadInMB": 1,
             "input": jsonlines}  # fmt: skip
    files = [manifest("batch", abalone_model.tarball, tmp_path, **block)]
    output = tmp_path / "batch" / "output"
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: any(output.glob(".*.partial")), WAIT, "an output in progress")
        [instance] = up.running("abalone-batch")
        spawned = [pid for pid in children_of(instance["pid"])
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]  # fmt: skip
        assert spawned, children_of(instance["pid"])
        os.kill(spawned[0], signal.SIGKILL)
        completed_after_a_retry(up, output, texts, abalone_model.booster())


def test_a_batch_job_stopped_midway_shows_the_progress_it_had(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Stopped by ``spec.batch.stop``, the job showed no progress at all under ``up`` (the
    operator keeps the progress seen last): it shows what its instances had done, from the
    summaries they leave as they stop."""
    inputs = tmp_path / "batch" / "input"
    inputs.mkdir(parents=True)
    for number in range(INPUTS):
        (inputs / f"part-{number:05d}.csv").write_bytes(to_csv(abalone_model.test_rows[:2]))
    files = [manifest("batch", abalone_model.tarball, tmp_path)]
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        done = lambda: (up.status("abalone-batch").get("progress") or {}).get("objectsDone", 0)  # noqa: E731
        wait_until(lambda: done() > 0, WAIT, "progress while running", interval=0.2)
        applied = cli(up, "apply", "-f", str(manifest("batch", abalone_model.tarball, tmp_path,
                                                      stop=True)))  # fmt: skip
        assert applied.returncode == 0, applied.stderr
        running = lambda: bool(up.running("abalone-batch"))  # noqa: E731
        wait_until(lambda: not running(), WAIT, "the instances to stop")
        wait_until(lambda: up.status("abalone-batch").get("progress"), WAIT, "its progress")
        status = up.status("abalone-batch")
        assert status["phase"] == "Stopped", status
        progress = status["progress"]
        # the instances' own counts: one stopped before it listed its share (under load, still
        # loading the model) left none, so the total may be a part of INPUTS
        assert 0 < progress["objectsDone"] <= progress["objectsTotal"] <= INPUTS, progress
        assert progress["objectsDone"] < INPUTS, progress


def test_stopping_a_batch_job_that_ended_keeps_its_outcome(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """``spec.batch.stop`` applied to a job that had Completed made it Stopped, its progress
    and end time gone (``up`` dropped the instances' summaries); the operator keeps a Job's
    Complete, as the platform refuses to stop a job that ended. Now it stays Completed, also
    when applied again without the stop."""
    inputs = tmp_path / "batch" / "input"
    inputs.mkdir(parents=True)
    for number in range(2):
        (inputs / f"part-{number}.csv").write_bytes(to_csv(abalone_model.test_rows[:3]))
    files = [manifest("batch", abalone_model.tarball, tmp_path)]
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        ended = lambda: up.status("abalone-batch")["phase"] not in ("Creating", "InProgress")  # noqa: E731
        wait_until(ended, WAIT, "the job to end")
        done = up.status("abalone-batch")
        assert done["phase"] == "Completed", done
        for stop in (True, False):
            again = manifest("batch", abalone_model.tarball, tmp_path, stop=stop)
            applied = cli(up, "apply", "-f", str(again))
            assert applied.returncode == 0, applied.stderr
            wait_until(ended, WAIT, "the job's outcome after the apply")
            status = up.status("abalone-batch")
            kept = {k: status.get(k) for k in ("phase", "progress", "endTime")}
            assert kept == {k: done.get(k) for k in ("phase", "progress", "endTime")}, status


@pytest.mark.parametrize("through_a_link", [False, True])
def test_a_batch_job_waits_for_an_older_one_writing_its_output_prefix(
    abalone_model: AbaloneModel, tmp_path: Path, through_a_link: bool
) -> None:
    """Two jobs writing one output prefix at once each skipped what the other wrote since it
    started as its own: each object ended with either job's output, both Completed. The
    second one now waits, saying for which, and runs once the first ended: the outputs are
    all its own. Also when it names that folder through a symbolic link (compared as
    written, the two were two folders)."""
    first_in, second_in = tmp_path / "batch" / "input", tmp_path / "second"
    first_in.mkdir(parents=True)
    second_in.mkdir()
    firsts = {f"part-{i}.csv": csv_text(sample_rows(abalone_model.test_rows, 100_000, i))
              for i in range(4)}  # fmt: skip
    seconds = {name: csv_text(sample_rows(abalone_model.test_rows, 50, 10 + i))
               for i, name in enumerate(firsts)}  # fmt: skip
    for name in firsts:
        (first_in / name).write_bytes(firsts[name])
        (second_in / name).write_bytes(seconds[name])
    files = [manifest("batch", abalone_model.tarball, tmp_path, batchStrategy="SingleRecord")]
    second = document("batch", abalone_model.tarball, tmp_path)
    second["metadata"]["name"] = "second-batch"
    second["spec"]["batch"]["input"]["uri"] = f"file://{second_in}/"
    output = tmp_path / "batch" / "output"
    if through_a_link:
        (tmp_path / "alias").symlink_to(output, target_is_directory=True)
        second["spec"]["batch"]["output"]["uri"] = f"file://{tmp_path}/alias/"
    (tmp_path / "second.yaml").write_text(yaml.safe_dump(second))
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: any(output.glob(".*.partial")), WAIT, "the first job running")
        applied = cli(up, "apply", "-f", str(tmp_path / "second.yaml"))
        assert applied.returncode == 0, applied.stderr
        waiting = up.status("second-batch")
        assert (waiting["phase"], waiting["reason"]) == ("InProgress", "OutputInUse"), waiting
        assert waiting["message"].startswith("waits for batch endpoint abalone-batch, which")
        assert up.running("second-batch") == []
        for name in ("abalone-batch", "second-batch"):
            ended = lambda name=name: up.status(name)["phase"] != "InProgress"  # noqa: E731
            wait_until(ended, WAIT * 3, f"{name} to end")
            assert up.status(name)["phase"] == "Completed", up.status(name)
    booster = abalone_model.booster()
    for name, text in seconds.items():  # written after the first job's, over them
        np.testing.assert_array_equal(
            scores_of((output / f"{name}.out").read_bytes()), expected_scores(booster, text)
        )


def test_a_model_server_that_stops_answering_leaves_the_rotation_until_it_answers(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A replica frozen (SIGSTOP: hung, as a deadlock or a swapping machine leaves one) stayed
    "running, ready" for good, and every request sent to it waited 60 s for a 504. Now two
    /pings in a row it leaves unanswered take it out of the rotation (the other replica answers
    every request), as a pod's readiness probe would, and it is back once it answers."""
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=2, maxReplicas=2)]
    body = to_csv(abalone_model.test_rows[:1])
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: up.status("abalone")["readyReplicas"] == 2, WAIT, "ready replicas")
        frozen = up.endpoint("abalone")["status"]["processes"][0]

        def process() -> dict:
            found = up.endpoint("abalone")["status"]["processes"]
            return next(p for p in found if p["key"] == frozen["key"])

        os.kill(frozen["pid"], signal.SIGSTOP)
        try:
            wait_until(lambda: not process()["ready"], WAIT, "the frozen replica out of rotation")
            answers = [up.invoke("abalone", body).status_code for _ in range(20)]
            assert answers == [200] * 20
        finally:
            os.kill(frozen["pid"], signal.SIGCONT)
        wait_until(lambda: process()["ready"], WAIT, "the replica back once it answers")
        assert process()["pid"] == frozen["pid"] and process()["restarts"] == 0
        assert "answered no /ping 2 times in a row: out of the rotation" in up.log
        answers = [up.invoke("abalone", body).status_code for _ in range(5)]
        assert answers == [200] * 5


def accepting_async(up: Up, abalone_model: AbaloneModel, tmp_path: Path, name: str) -> None:
    """An async endpoint of ``name`` applied by the CLI, once its route accepts requests."""
    ours = document("async", abalone_model.tarball, tmp_path)
    ours["metadata"]["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(ours))
    applied = cli(up, "apply", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    wait_until(lambda: up.invoke(name, b"1", path="async-invocations").status_code == 202,
               WAIT, "the async endpoint accepting")  # fmt: skip


def test_a_deleted_async_endpoints_accept_series_leave_metrics_as_invocations_do(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The accept route's counts of an endpoint stayed in /metrics after it was deleted (the
    invocations' series go): every async endpoint ever served would stay listed."""
    accepting_async(up, abalone_model, tmp_path, "counted-async")
    series = 'infermodes_async_requests_total{endpoint="counted-async",status_code="202"}'
    assert series in httpx.get(f"{up.url}/metrics", timeout=10).text
    deleted = cli(up, "delete", "counted-async")
    assert deleted.returncode == 0, deleted.stderr
    wait_until(lambda: 'endpoint="counted-async"' not in httpx.get(f"{up.url}/metrics",
               timeout=10).text, WAIT, "its series gone")  # fmt: skip


def test_an_async_request_whose_headers_are_refused_is_answered_before_its_body_is_read(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A refusal that needs no body (a TTL that is no number) came only after up to 16 MiB of
    inline body was read, and a client waiting for 100 Continue was told to send it first."""
    accepting_async(up, abalone_model, tmp_path, "headers-async")
    try:
        with socket.create_connection(("127.0.0.1", up.port), timeout=30) as conn:
            large = b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (8 << 20)
            conn.sendall(b"POST /endpoints/headers-async/async-invocations HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nContent-Type: text/csv\r\n"
                         b"X-Amzn-SageMaker-RequestTTLSeconds: soon\r\n" + large)  # fmt: skip
            head = answer_head(conn)
        assert head.startswith(b"HTTP/1.1 400 "), head
        assert b"connection: close" in head.lower()
    finally:
        cli(up, "delete", "headers-async")


def test_up_sends_webhooks_from_the_embedded_queues_outbox(
    abalone_model: AbaloneModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded queue carries the webhook outbox as RabbitMQ does: a worker of ``up``
    whose only invocation slot is free while its first request's POST is held (10 tries, each
    held to the worker's 10 s cutoff: minutes) takes the next request, and every webhook
    reaches its receiver."""
    monkeypatch.setenv("INFERMODES_WORKER_WEBHOOK_ATTEMPTS", "10")  # up's workers inherit it
    release = threading.Event()
    with WebhookReceiver(holds=lambda _: release) as hook:
        files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1,
                          maxConcurrentInvocationsPerInstance=1,
                          notification={"topic": False, "successWebhook": hook.url})]  # fmt: skip
        with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
            first = accept_async(up, abalone_model.test_rows, 1, 1)
            try:
                wait_until(lambda: hook.ids() == set(first), WAIT, "the first POST held")
                second = accept_async(up, abalone_model.test_rows, 1, 1)
                output = tmp_path / "async" / "output"
                wait_until(lambda: (output / f"{next(iter(second))}.out").exists(), WAIT,
                           "the second output while the first POST is held")  # fmt: skip
            finally:
                release.set()
            wait_until(lambda: hook.ids() == {*first, *second}, WAIT, "both webhooks")


def test_a_stored_job_with_a_dotted_output_uri_survives_a_restart_and_keeps_its_hold(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A batch job up stored under a release that took output.uri file://.../batch/./output/
    was dropped at the next start (a spec this version refuses), and with it its hold on the
    folder: the next job on it ran beside it. The state loads as it was; apply still refuses
    the spelling."""
    stopped = manifest("batch", abalone_model.tarball, tmp_path, stop=True)  # holds its output
    with running_up(tmp_path / "state", [stopped], tmp_path / "up.log") as up:
        wait_until(lambda: up.status("abalone-batch")["phase"] == "Stopped", WAIT, "Stopped")
        up.stop()
        saved_path = up.state_dir / "endpoints" / "abalone-batch.json"
        saved = json.loads(saved_path.read_text())
        dotted = f"file://{tmp_path}/batch/./output/"
        saved["document"]["spec"]["batch"]["output"]["uri"] = dotted
        saved_path.write_text(json.dumps(saved))
        up.files = []
        up.start()
        assert up.status("abalone-batch")["phase"] == "Stopped"
        assert up.endpoint("abalone-batch")["spec"]["batch"]["output"]["uri"] == dotted
        second = document("batch", abalone_model.tarball, tmp_path)
        second["metadata"]["name"] = "second"
        (tmp_path / "second.yaml").write_text(yaml.safe_dump(second))
        assert cli(up, "apply", "-f", str(tmp_path / "second.yaml")).returncode == 0
        wait_until(lambda: up.status("second")["reason"] == "OutputInUse", WAIT, "OutputInUse")
        assert "waits for batch endpoint abalone-batch" in up.status("second")["message"]
        second["spec"]["batch"]["output"]["uri"] = dotted
        (tmp_path / "dotted.yaml").write_text(yaml.safe_dump(second))
        refused = cli(up, "apply", "-f", str(tmp_path / "dotted.yaml"))
        assert refused.returncode != 0 and "has a '.' segment" in refused.stderr, refused.stderr
