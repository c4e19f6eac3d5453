"""Each mode's behaviour through the gateway URL, on both actuators (``conftest.actuator``):
predictions equal the booster's, a realtime rollout's phases and reasons said alike,
serverless cold start from zero and back to zero, throttling with 429, async exactly once with
a worker SIGKILLed while it holds work (how its pool stands said alike), batch outputs and a
failing object named in the status."""

from __future__ import annotations

import concurrent.futures
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AbaloneModel
from tests.scenarios.actuators import Actuator, kill
from tests.support.async_plane import to_csv
from tests.support.local import document
from tests.support.processes import wait_until

WAIT = 180.0  # the operator's pods start in seconds, up's processes in a fraction of one
IDLE_SECONDS = 10  # the spec's minimum idleTimeoutSeconds
CSV = {"content-type": "text/csv"}


def endpoint(
    mode: str, name: str, model: AbaloneModel, folder: Path, **block: Any
) -> dict[str, Any]:
    """The example manifest of ``mode``, named ``name`` (storage under ``folder``)."""
    manifest = document(mode, model.tarball, folder, **block)
    manifest["metadata"]["name"] = name
    return manifest


def scores(text: str) -> np.ndarray:
    return np.array(text.split(), dtype=np.float32)


def predicted(model: AbaloneModel, rows: np.ndarray) -> np.ndarray:
    return model.booster().inplace_predict(rows)  # type: ignore[attr-defined,no-any-return]


def invoke(actuator: Actuator, name: str, body: bytes, path: str = "invocations") -> httpx.Response:
    return httpx.post(f"{actuator.url}/endpoints/{name}/{path}", content=body, headers=CSV,
                      timeout=90.0)  # fmt: skip


def wait_status(
    actuator: Actuator, name: str, what: str, check: Any, timeout: float = WAIT
) -> None:
    """Until ``check(status)`` holds; on a timeout the last status is in the error."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.clear()
        seen.update(actuator.status(name))
        return bool(check(seen))

    try:
        wait_until(reached, timeout, f"{name}: {what}", interval=0.2)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc} on {actuator.name}; last status: {json.dumps(seen)}") from None


def test_realtime_predictions_equal_the_boosters(
    actuator: Actuator, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    actuator.apply(endpoint("realtime", "rt", abalone_model, tmp_path,
                            minReplicas=1, maxReplicas=1))  # fmt: skip
    wait_status(actuator, "rt", "a ready replica", lambda s: s.get("readyReplicas") == 1)
    rows = abalone_model.test_rows
    response = invoke(actuator, "rt", to_csv(rows))
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(scores(response.text), predicted(abalone_model, rows), rtol=1e-6)


def test_a_realtime_rollout_is_said_alike(
    actuator: Actuator, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Both actuators say a realtime endpoint's steps by one rule (``status.replicas_phase``):
    InService, AllReplicasReady; a new spec's replica replacing the old one: Updating,
    RollingOut; then InService, AllReplicasReady again (``up`` said Ready, and Updating,
    Updating)."""
    said = lambda phase, reason: lambda s: (s.get("phase"), s.get("reason")) == (phase, reason)  # noqa: E731
    actuator.apply(endpoint("realtime", "roll", abalone_model, tmp_path,
                            minReplicas=1, maxReplicas=1))  # fmt: skip
    wait_status(actuator, "roll", "in service", said("InService", "AllReplicasReady"))
    actuator.apply(endpoint("realtime", "roll", abalone_model, tmp_path,
                            minReplicas=1, maxReplicas=1, workers=2))  # fmt: skip
    wait_status(actuator, "roll", "its rollout", said("Updating", "RollingOut"))
    wait_status(actuator, "roll", "rolled out", said("InService", "AllReplicasReady"))
    rows = abalone_model.test_rows[:5]
    response = invoke(actuator, "roll", to_csv(rows))
    assert response.status_code == 200, response.text


def test_serverless_cold_starts_from_zero_and_returns_to_zero(
    actuator: Actuator, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    actuator.apply(endpoint("serverless", "sls", abalone_model, tmp_path,
                            idleTimeoutSeconds=IDLE_SECONDS))  # fmt: skip
    wait_status(actuator, "sls", "InService at zero",
                lambda s: s.get("phase") == "InService" and s.get("replicas") == 0)  # fmt: skip
    # the replica that loaded its model before it was InService stops at once (no request)
    wait_until(lambda: actuator.processes("sls") == [], WAIT, "the loading replica to stop")
    rows = abalone_model.test_rows[:20]
    response = invoke(actuator, "sls", to_csv(rows))
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(scores(response.text), predicted(abalone_model, rows), rtol=1e-6)
    assert len(actuator.processes("sls")) == 1
    # no request for idleTimeoutSeconds: back to zero replicas and no process
    wait_status(actuator, "sls", "back to zero after its idle timeout",
                lambda s: s.get("replicas") == 0, WAIT + IDLE_SECONDS)  # fmt: skip
    wait_until(lambda: actuator.processes("sls") == [], WAIT, "the replica to stop")


def gateway_figure(actuator: Actuator, metric: str, name: str) -> float:
    """One of the gateway's metrics for one endpoint."""
    text = httpx.get(actuator.metrics_url, timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == metric and sample.labels.get("endpoint") == name
    )


def throttled_total(actuator: Actuator, name: str) -> float:
    """The gateway's ``infermodes_gateway_throttled_total`` of one endpoint."""
    return gateway_figure(actuator, "infermodes_gateway_throttled_total", name)


def throttling_round(
    actuator: Actuator, name: str, abalone_model: AbaloneModel, tmp_path: Path
) -> list[httpx.Response]:
    """A serverless endpoint of maxConcurrency 1 at zero replicas; one large request, then five
    small ones once the gateway has admitted it (held for the cold start, then scored)."""
    actuator.apply(endpoint("serverless", name, abalone_model, tmp_path,
                            maxConcurrency=1, concurrencyPerReplica=1))  # fmt: skip
    wait_status(actuator, name, "InService at zero",
                lambda s: s.get("phase") == "InService" and s.get("replicas") == 0)  # fmt: skip
    body = to_csv(abalone_model.test_rows[:5])
    rows = abalone_model.test_rows
    large = to_csv(np.resize(rows, (10_000, rows.shape[1])))  # ~1 MB: a serverless body is <= 4
    go = threading.Event()

    def after_the_first(_: int) -> httpx.Response:
        assert go.wait(60)
        return invoke(actuator, name, body)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        first = pool.submit(invoke, actuator, name, large)
        others = [pool.submit(after_the_first, index) for index in range(5)]
        admitted = "infermodes_gateway_requests_in_flight"
        wait_until(lambda: first.done() or gateway_figure(actuator, admitted, name) >= 1,
                   30, "the first request admitted", interval=0.005)  # fmt: skip
        go.set()
        return [first.result(), *(other.result() for other in others)]


def test_serverless_beyond_max_concurrency_is_throttled_with_429(
    actuator: Actuator, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """maxConcurrency 1 at zero replicas: the first request is held for the cold start, the
    others arriving meanwhile get 429 ThrottlingException at once, never a 5xx. On a loaded
    machine the five may all arrive only after the first was answered (all 200, as they
    should then): up to three rounds, each on a new endpoint at zero, for one that overlaps."""
    for round_ in range(3):
        name = f"throttled-{round_}"
        before = throttled_total(actuator, name)
        answers = throttling_round(actuator, name, abalone_model, tmp_path)
        codes = [a.status_code for a in answers]
        assert set(codes) <= {200, 429}, codes  # never a 5xx, nor anything else
        if 429 in codes:
            break
    assert set(codes) == {200, 429}, codes
    for answer in answers:
        if answer.status_code == 429:
            assert answer.json()["error"] == "ThrottlingException"
            assert answer.headers["x-amzn-errortype"].startswith("ThrottlingException")
    assert throttled_total(actuator, name) - before == codes.count(429)


def outputs(folder: Path) -> dict[str, np.ndarray]:
    """Result objects by inference id (a dot starts an interrupted write's temporary file)."""
    return {
        path.name.removesuffix(".out"): scores(path.read_text())
        for path in folder.glob("*.out")
        if not path.name.startswith(".")
    }


def test_async_requests_complete_once_with_a_worker_killed_mid_way(
    actuator: Actuator, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A large request by reference keeps the one worker busy; it is SIGKILLed while it holds
    work. Every accepted request still ends with exactly one output, equal to the booster's,
    and no error object."""
    actuator.apply(endpoint("async", "queued", abalone_model, tmp_path, maxReplicas=1,
                            maxConcurrentInvocationsPerInstance=2))  # fmt: skip
    wait_status(actuator, "queued", "InService", lambda s: s.get("phase") == "InService")
    # how the pool stands, said alike (up said its scaling decision's reason: InitialReplicas)
    assert actuator.status("queued")["reason"] in ("Idle", "Processing"), actuator.name
    output = tmp_path / "async" / "output"
    rows = abalone_model.test_rows
    copies = 1_200_000 // len(rows) + 1  # ~75 MB of CSV: seconds of a worker's time
    big_input = output / "input" / "big.csv"  # where the accept route takes inputs from
    big_input.parent.mkdir(parents=True)
    big_input.write_bytes(to_csv(rows) * copies)
    by_reference = {**CSV, "X-Amzn-SageMaker-InputLocation": f"file://{big_input}"}
    big = httpx.post(f"{actuator.url}/endpoints/queued/async-invocations", timeout=30,
                     headers=by_reference)  # fmt: skip
    assert big.status_code == 202, big.text
    small = {}
    for index in range(20):
        answer = invoke(actuator, "queued", to_csv(rows[index : index + 5]), "async-invocations")
        assert answer.status_code == 202, answer.text
        assert answer.json()["OutputLocation"].startswith(f"file://{output}/")
        small[answer.json()["InferenceId"]] = rows[index : index + 5]

    wait_until(lambda: bool(actuator.processes("queued")) and actuator.in_flight("queued") > 0,
               WAIT, f"a worker holding requests on {actuator.name}")  # fmt: skip
    (worker,) = actuator.processes("queued")
    kill(worker)
    big_output = output / f"{big.json()['InferenceId']}.out"
    assert not big_output.exists(), "the worker was done with the large request before the kill"
    wait_until(lambda: len(outputs(output)) == 21, WAIT * 2, "every async output")
    found = outputs(output)
    assert set(found) == set(small) | {big.json()["InferenceId"]}
    for inference_id, request_rows in small.items():
        np.testing.assert_allclose(found[inference_id], predicted(abalone_model, request_rows),
                                   rtol=1e-6)  # fmt: skip
    expected_big = np.tile(predicted(abalone_model, rows), copies)
    np.testing.assert_allclose(found[big.json()["InferenceId"]], expected_big, rtol=1e-6)
    assert not list(output.glob("*.error"))
    wait_status(actuator, "queued", "an empty backlog",
                lambda s: (s.get("backlog") or {}).get("total") == 0)  # fmt: skip
    assert len(outputs(output)) == 21  # nothing written twice under a second name
    assert actuator.status("queued")["reason"] in ("Idle", "Processing"), actuator.name


def batch_outcome(
    actuator: Actuator, name: str, model: AbaloneModel, folder: Path, **block: Any
) -> dict[str, Any]:
    """Apply the example batch endpoint and wait for it to end: its status."""
    actuator.apply(endpoint("batch", name, model, folder, **block))
    wait_status(actuator, name, "the batch to end",
                lambda s: s.get("phase") in ("Completed", "Failed"), WAIT * 2)  # fmt: skip
    return actuator.status(name)


def test_batch_writes_every_output_and_names_the_failing_object(
    actuator: Actuator, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    inputs = tmp_path / "batch" / "input"
    inputs.mkdir(parents=True)
    rows = abalone_model.test_rows
    for index in range(3):
        (inputs / f"part-{index}.csv").write_bytes(to_csv(rows[index * 50 : index * 50 + 50]))
    (inputs / "broken.csv").write_bytes(to_csv(rows[:2]) + b"1,2,not-a-number\n")
    status = batch_outcome(actuator, "scores", abalone_model, tmp_path, instanceCount=2)
    assert (status["phase"], status["reason"]) == ("Failed", "ObjectsFailed"), status
    assert f"{inputs}/broken.csv line 3" in status["message"], status["message"]
    assert "expected 10 features" in status["message"]
    progress = status["progress"]
    assert (progress["objectsTotal"], progress["objectsDone"], progress["objectsFailed"]) == (
        4, 3, 1,
    ), progress  # fmt: skip
    output = tmp_path / "batch" / "output"
    assert sorted(p.name for p in output.glob("*.out")) == [f"part-{i}.csv.out" for i in range(3)]
    for index in range(3):
        got = scores((output / f"part-{index}.csv.out").read_text())
        expected = predicted(abalone_model, rows[index * 50 : index * 50 + 50])
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_batch_with_no_inputs_fails_as_a_job_saying_so(
    actuator: Actuator, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A mistyped input prefix: Failed, not Completed with nothing done, and not as if its
    objects had failed."""
    inputs = tmp_path / "batch" / "input"
    inputs.mkdir(parents=True)
    status = batch_outcome(actuator, "nothing", abalone_model, tmp_path, instanceCount=1)
    assert (status["phase"], status["reason"]) == ("Failed", "JobFailed"), status
    assert f"no input objects under file://{inputs}" in status["message"], status["message"]
