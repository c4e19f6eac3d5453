"""Batch transform end to end on the test control plane, over a real S3-compatible store
(SeaweedFS): kubectl apply -> an Indexed Job -> Completed with every output right, a failing
object named with its line, a re-run that processes only what is missing, and bad specs refused
by the API server."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import yaml

from tests.conftest import AbaloneModel
from tests.e2e.operator_support import (
    Tools,
    get_endpoint,
    wait_phase,
)
from tests.support.processes import REPO, wait_until
from tests.support.s3 import S3Endpoint

ROWS_PER_OBJECT = 20_000
OBJECTS = 5


@pytest.fixture(scope="module")
def data(store: S3Endpoint, abalone_model: AbaloneModel) -> dict[str, Any]:
    """A bucket with the model and five CSV objects of 20,000 rows each."""
    client: Any = store.client()
    client.create_bucket(Bucket="e2e")
    client.upload_file(str(abalone_model.tarball), "e2e", "model/model.tar.gz")
    generator = np.random.default_rng(7)
    base = abalone_model.test_rows
    objects = {}
    for index in range(OBJECTS):
        rows = base[generator.integers(0, len(base), ROWS_PER_OBJECT)]
        objects[f"part-{index}.csv"] = rows
    return {"client": client, "objects": objects, "booster": abalone_model.booster()}


def to_csv(rows: np.ndarray) -> bytes:
    buffer = io.StringIO()
    np.savetxt(buffer, rows, delimiter=",", fmt="%.6g")
    return buffer.getvalue().encode()


def upload_inputs(data: dict[str, Any], prefix: str, broken: str | None = None) -> None:
    for name, rows in data["objects"].items():
        text = to_csv(rows)
        if name == broken:  # line 101 gets a non-number in its fourth column
            lines = text.split(b"\n")
            fields = lines[100].split(b",")
            fields[3] = b"oops"
            lines[100] = b",".join(fields)
            text = b"\n".join(lines)
        data["client"].put_object(Bucket="e2e", Key=f"{prefix}/input/{name}", Body=text)


def storage_secret(tools: Tools, namespace: str, store: S3Endpoint) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "infermodes-s3"},
              "stringData": store.env}  # fmt: skip
    tools.cluster.api.post(f"/api/v1/namespaces/{namespace}/secrets", secret)


def batch_manifest(name: str, prefix: str, **batch: Any) -> dict[str, Any]:
    manifest = yaml.safe_load((REPO / "examples/abalone/batch.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"]["uri"] = "s3://e2e/model/model.tar.gz"
    manifest["spec"]["storageSecretRef"] = {"name": "infermodes-s3"}
    block = manifest["spec"]["batch"]
    block["input"]["uri"] = f"s3://e2e/{prefix}/input/"
    block["output"]["uri"] = f"s3://e2e/{prefix}/output/"
    block.update({"instanceCount": 2, "resources": {"cpu": "500m", "memory": "512Mi"}}, **batch)
    return manifest


def outputs(data: dict[str, Any], prefix: str) -> dict[str, bytes]:
    listing = data["client"].list_objects_v2(Bucket="e2e", Prefix=f"{prefix}/output/")
    found = {}
    for item in listing.get("Contents", []):
        key = item["Key"]
        if key.endswith(".out") and "/_" not in key:
            body = data["client"].get_object(Bucket="e2e", Key=key)["Body"].read()
            found[key.rsplit("/", 1)[1]] = body
    return found


def invalid_spec_message(tools: Tools, namespace: str, manifest: dict[str, Any]) -> str:
    """Apply ``manifest``, which the API server takes and the operator does not: the message
    of the endpoint's Failed, InvalidSpec status."""
    applied = tools.apply(manifest, namespace)
    assert applied.returncode == 0, applied.stderr
    name = manifest["metadata"]["name"]
    endpoint = wait_phase(tools.cluster.api, namespace, name, "Failed")
    assert endpoint["status"]["reason"] == "InvalidSpec"
    return str(endpoint["status"]["message"])


def test_five_objects_over_two_instances_complete_with_every_row_right(
    tools: Tools, k8s_namespace: str, store: S3Endpoint, data: dict[str, Any]
) -> None:
    api = tools.cluster.api
    storage_secret(tools, k8s_namespace, store)
    upload_inputs(data, "ok")
    applied = tools.apply(batch_manifest("scores", "ok"), k8s_namespace)
    assert applied.returncode == 0, applied.stderr
    progress_seen: list[dict[str, Any]] = []

    def finished() -> bool:
        status = (get_endpoint(api, k8s_namespace, "scores") or {}).get("status") or {}
        if status.get("phase") == "InProgress" and status.get("progress"):
            progress_seen.append(status["progress"])
        return status.get("phase") in ("Completed", "Failed")

    wait_until(finished, 300, "the job to end", interval=0.2)
    endpoint = wait_phase(api, k8s_namespace, "scores", "Completed", timeout=10)
    assert progress_seen, "status showed no progress while the job ran"
    progress = endpoint["status"]["progress"]
    assert (progress["objectsTotal"], progress["objectsDone"]) == (OBJECTS, OBJECTS)
    assert progress["recordsDone"] == OBJECTS * ROWS_PER_OBJECT
    shown = tools.kubectl("get", "ie", "scores", "-n", k8s_namespace)
    assert "Completed" in shown.stdout and f"{OBJECTS}/{OBJECTS}" in shown.stdout, shown.stdout
    found = outputs(data, "ok")
    assert sorted(found) == sorted(f"{name}.out" for name in data["objects"])
    for name, rows in data["objects"].items():
        got = np.loadtxt(io.BytesIO(found[f"{name}.out"]), dtype=np.float32)
        sent = np.loadtxt(io.BytesIO(to_csv(rows)), delimiter=",", dtype=np.float32)
        np.testing.assert_array_equal(got, data["booster"].inplace_predict(sent))
    reasons = {e["reason"] for e in api.get(f"/api/v1/namespaces/{k8s_namespace}/events")["items"]
               if e["involvedObject"].get("kind") == "InferenceEndpoint"}  # fmt: skip
    assert {"InProgress", "Completed"} <= reasons
    # the Job's pod template never changes: neither do the fields it is made of
    for field, value in (("image", "registry.example/other:1"),
                         ("storageSecretRef", {"name": "other"})):  # fmt: skip
        changed = batch_manifest("scores", "ok")
        changed["spec"][field] = value
        refused = tools.apply(changed, k8s_namespace)
        assert refused.returncode != 0, field
        assert "a batch job's spec cannot change once created" in refused.stderr, refused.stderr
    # its Job deleted once it ended: not made again (that would run it anew), outcome kept
    deleted = tools.kubectl("delete", "job", "ie-scores", "-n", k8s_namespace, "--wait=true")
    assert deleted.returncode == 0, deleted.stderr
    gone = "its Job was deleted and is not made again"
    kept = wait_phase(api, k8s_namespace, "scores", "Completed", timeout=60,
                      also=lambda e: gone in e["status"]["message"])  # fmt: skip
    assert kept["status"]["progress"]["objectsDone"] == OBJECTS
    jobs = api.get(f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs")["items"]
    assert jobs == [], [j["metadata"]["name"] for j in jobs]


def test_an_instance_that_cannot_start_is_named_in_the_status(
    tools: Tools, k8s_namespace: str
) -> None:
    """A storage Secret that does not exist keeps the instances waiting: the endpoint stays
    InProgress (creating the Secret lets them start) and its status says why."""
    manifest = batch_manifest("waits", "never")
    manifest["spec"]["storageSecretRef"] = {"name": "infermodes-no-such-secret"}
    applied = tools.apply(manifest, k8s_namespace)
    assert applied.returncode == 0, applied.stderr
    stuck = lambda e: e["status"].get("reason") == "ContainerCannotRun"  # noqa: E731
    endpoint = wait_phase(tools.cluster.api, k8s_namespace, "waits", "InProgress", also=stuck)
    assert "cannot start: CreateContainerConfigError" in endpoint["status"]["message"]
    assert "no-such-secret" in endpoint["status"]["message"]


def test_a_secret_the_operator_does_not_give_endpoints_fails_the_endpoint(
    tools: Tools, k8s_namespace: str, store: S3Endpoint
) -> None:
    """Whoever may create an endpoint named any Secret of the namespace and had its pods use
    it (a batch job copying another team's data out with their storage credentials). A
    Secret outside operator.allowedSecretNames (default: infermodes-*) makes it Failed,
    InvalidSpec, naming the field and the Secret, and no Job is made."""
    api = tools.cluster.api
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "payments-s3"},
              "stringData": store.env}  # fmt: skip
    api.post(f"/api/v1/namespaces/{k8s_namespace}/secrets", secret)
    manifest = batch_manifest("borrows", "borrowed")
    manifest["spec"]["storageSecretRef"] = {"name": "payments-s3"}
    message = invalid_spec_message(tools, k8s_namespace, manifest)
    assert "spec.storageSecretRef.name 'payments-s3' is not a Secret" in message, message
    assert api.get(f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs")["items"] == []


def test_instance_pods_a_quota_refuses_are_named_in_the_status(
    tools: Tools, k8s_namespace: str, store: S3Endpoint, data: dict[str, Any]
) -> None:
    """A quota of no pods: the Job cannot create its instances, which no condition of it
    says; the endpoint stays InProgress with the Job's words. The quota gone, the Job creates
    them and the job runs on."""
    api = tools.cluster.api
    storage_secret(tools, k8s_namespace, store)
    upload_inputs(data, "quota")
    quotas = f"/api/v1/namespaces/{k8s_namespace}/resourcequotas"
    no_pods = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
               "spec": {"hard": {"pods": "0"}}}  # fmt: skip
    api.post(quotas, no_pods)
    applied = tools.apply(batch_manifest("held", "quota"), k8s_namespace)
    assert applied.returncode == 0, applied.stderr
    by = lambda reason: lambda e: e["status"].get("reason") == reason  # noqa: E731
    endpoint = wait_phase(api, k8s_namespace, "held", "InProgress", also=by("FailedCreate"))
    message = endpoint["status"]["message"]
    assert "instance pods cannot be created:" in message and "no-pods" in message, message
    api.delete(f"{quotas}/no-pods")
    wait_phase(api, k8s_namespace, "held", "Completed", timeout=300)


def test_a_failing_object_is_named_and_a_rerun_processes_only_it(
    tools: Tools, k8s_namespace: str, store: S3Endpoint, data: dict[str, Any]
) -> None:
    api = tools.cluster.api
    storage_secret(tools, k8s_namespace, store)
    upload_inputs(data, "bad", broken="part-3.csv")
    assert tools.apply(batch_manifest("partly", "bad"), k8s_namespace).returncode == 0
    endpoint = wait_phase(api, k8s_namespace, "partly", "Failed", timeout=300)
    message = endpoint["status"]["message"]
    assert "s3://e2e/bad/input/part-3.csv line 101" in message, message
    assert sorted(outputs(data, "bad")) == [f"part-{i}.csv.out" for i in (0, 1, 2, 4)]

    # fix the input, then run again keeping what is done: delete and re-create the endpoint
    # with output.keepExisting (a new job otherwise writes over every output, as the platform)
    upload_inputs(data, "bad")
    deleted = tools.kubectl("delete", "ie", "partly", "-n", k8s_namespace, "--wait=true")
    assert deleted.returncode == 0, deleted.stderr
    wait_until(lambda: not api.get(f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs")["items"],
               120, "the old job to go")  # fmt: skip
    again = batch_manifest("partly", "bad")
    again["spec"]["batch"]["output"]["keepExisting"] = True
    assert tools.apply(again, k8s_namespace).returncode == 0
    endpoint = wait_phase(api, k8s_namespace, "partly", "Completed", timeout=300)
    assert endpoint["status"]["progress"]["recordsDone"] == ROWS_PER_OBJECT  # only part-3
    assert len(outputs(data, "bad")) == OBJECTS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"maxPayloadInMB": 20, "maxConcurrentTransforms": 6}, "must not exceed 100"),
        ({"invocationsMaxRetries": 4}, "should be less than or equal to 3"),
        ({"input": {"uri": "s3://e2e/x/", "splitType": "RecordIO"}}, "Unsupported value"),
        (
            {"input": {"uri": "s3://e2e/x/", "contentType": "text/plain"}},
            "spec.batch.input.contentType: Invalid value",
        ),
        (
            {"output": {"uri": "s3://e2e/y/", "accept": "image/png"}},
            "spec.batch.output.accept: Invalid value",
        ),
        # the CEL rules read the type a header names (RE2, any case, parameters)
        (
            {
                "input": {"uri": "s3://e2e/x/", "contentType": "Text/CSV; charset=utf-8"},
                "output": {"uri": "s3://e2e/y/", "accept": "application/json"},
                "dataProcessing": {"joinSource": "Input"},
            },
            "joins like with like",
        ),
        (
            {
                "input": {"uri": "s3://e2e/x/", "contentType": "text/x-libsvm;charset=utf-8"},
                "dataProcessing": {"inputFilter": "$[1:]"},
            },
            "not libsvm",
        ),
    ],
)
def test_bad_batch_specs_are_refused_by_kubectl_apply(
    tools: Tools, k8s_namespace: str, change: dict[str, Any], message: str
) -> None:
    manifest = batch_manifest("refused", "x")
    manifest["spec"]["batch"].update(change)
    applied = tools.apply(manifest, k8s_namespace)
    assert applied.returncode != 0
    assert message in applied.stderr, applied.stderr
    assert get_endpoint(tools.cluster.api, k8s_namespace, "refused") is None


def test_headers_with_parameters_are_applied_and_the_job_completes(
    tools: Tools, k8s_namespace: str, store: S3Endpoint, data: dict[str, Any]
) -> None:
    """contentType and accept are each mini-batch's headers, as the platform API's ContentType
    and Accept: kubectl apply took only the bare types. With a charset parameter (and a join,
    whose CEL rule reads the types the headers name) the job runs and joins each row with its
    score; a charset the instances cannot read passes the schema and fails the endpoint,
    naming the field."""
    api = tools.cluster.api
    storage_secret(tools, k8s_namespace, store)
    upload_inputs(data, "charset")
    manifest = batch_manifest("charset", "charset", dataProcessing={"joinSource": "Input"})
    manifest["spec"]["batch"]["input"]["contentType"] = "text/csv; charset=utf-8"
    manifest["spec"]["batch"]["output"]["accept"] = "Text/CSV;charset=UTF-8"
    applied = tools.apply(manifest, k8s_namespace)
    assert applied.returncode == 0, applied.stderr
    wait_phase(api, k8s_namespace, "charset", "Completed", timeout=300)
    found = outputs(data, "charset")
    assert sorted(found) == sorted(f"{name}.out" for name in data["objects"])
    for name, rows in data["objects"].items():
        joined = np.loadtxt(io.BytesIO(found[f"{name}.out"]), delimiter=",", dtype=np.float32)
        sent = np.loadtxt(io.BytesIO(to_csv(rows)), delimiter=",", dtype=np.float32)
        np.testing.assert_array_equal(joined[:, :-1], sent)
        np.testing.assert_array_equal(joined[:, -1], data["booster"].inplace_predict(sent))
    latin = batch_manifest("latin", "latin")
    latin["spec"]["batch"]["input"]["contentType"] = "text/csv; charset=latin-1"
    message = invalid_spec_message(tools, k8s_namespace, latin)
    assert "spec.batch.input.contentType: unsupported charset 'latin-1'" in message, message
    jobs = api.get(f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs")["items"]
    assert [job["metadata"]["name"] for job in jobs] == ["ie-charset"]


def test_a_job_waits_for_an_older_one_writing_its_output_prefix(
    tools: Tools, k8s_namespace: str, store: S3Endpoint, data: dict[str, Any]
) -> None:
    """Two jobs writing one prefix at once each took the other's outputs for their own. A
    stopped job may resume, so it holds its prefix: the second waits (``OutputInUse``, naming
    it, no Job) until the first is deleted, then runs and completes. Both are applied
    together, seconds after the operator listed every endpoint for another one: a listing
    made before they existed must not decide for them (it did, and both ran)."""
    api = tools.cluster.api
    storage_secret(tools, k8s_namespace, store)
    upload_inputs(data, "shared")
    primer = batch_manifest("primer", "primer", stop=True)  # its reconcile lists every endpoint
    assert tools.apply(primer, k8s_namespace).returncode == 0
    wait_phase(api, k8s_namespace, "primer", "Stopped")
    both = [batch_manifest("first", "shared", stop=True), batch_manifest("second", "shared")]
    applied = tools.apply({"apiVersion": "v1", "kind": "List", "items": both}, k8s_namespace)
    assert applied.returncode == 0, applied.stderr
    wait_phase(api, k8s_namespace, "first", "Stopped")
    waiting = wait_phase(api, k8s_namespace, "second", "InProgress",
                         also=lambda e: e["status"].get("reason") == "OutputInUse")  # fmt: skip
    message = waiting["status"]["message"]
    assert message.startswith(f"waits for batch endpoint {k8s_namespace}/first, which"), message
    assert message.endswith(
        "; delete this one and create it with an output.uri of its own to run it now"
    ), message  # applied as YAML: the spec's words
    jobs = api.get(f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs")["items"]
    assert sorted(job["metadata"]["name"] for job in jobs) == ["ie-first", "ie-primer"]
    deleted = tools.kubectl("delete", "ie", "first", "-n", k8s_namespace, "--wait=true")
    assert deleted.returncode == 0, deleted.stderr
    wait_phase(api, k8s_namespace, "second", "Completed", timeout=300)
    assert len(outputs(data, "shared")) == OBJECTS


def stopped_job(
    tools: Tools, namespace: str, store: S3Endpoint, data: dict[str, Any], name: str
) -> None:
    """A job ``name`` over its own inputs (prefix ``name``), created stopped: Stopped."""
    storage_secret(tools, namespace, store)
    upload_inputs(data, name)
    stopped = tools.apply(batch_manifest(name, name, stop=True), namespace)
    assert stopped.returncode == 0, stopped.stderr
    wait_phase(tools.cluster.api, namespace, name, "Stopped")


def test_a_job_created_stopped_runs_once_resumed_and_completes(
    tools: Tools, k8s_namespace: str, store: S3Endpoint, data: dict[str, Any]
) -> None:
    """``stop`` reaches an existing Job as a patch of its ``suspend`` alone (the rest of a Job
    cannot change, so it is not applied again whole): stopped, then resumed, it completes."""
    api = tools.cluster.api
    stopped_job(tools, k8s_namespace, store, data, "resumed")
    job = api.get(f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs/ie-resumed")
    assert job["spec"]["suspend"] is True
    assert outputs(data, "resumed") == {}
    patched = tools.kubectl("patch", "ie", "resumed", "-n", k8s_namespace, "--type=merge",
                            "-p", '{"spec": {"batch": {"stop": false}}}')  # fmt: skip
    assert patched.returncode == 0, patched.stderr
    wait_phase(api, k8s_namespace, "resumed", "Completed", timeout=300)
    assert sorted(outputs(data, "resumed")) == sorted(f"{name}.out" for name in data["objects"])


def test_a_resume_the_api_server_refuses_is_in_the_status_and_taken_once_allowed(
    tools: Tools, k8s_namespace: str, store: S3Endpoint, data: dict[str, Any]
) -> None:
    """The Job is applied once, then only its ``suspend`` is patched. A patch the API server
    refused (here an admission policy keeping the namespace's Jobs suspended, a 422) was a
    KubeError retried at every resync, the status still saying the job was Stopped. It now
    says the API's words (reason ApplyRefused); the policy gone, the next resync resumes the
    job, which completes."""
    api = tools.cluster.api
    stopped_job(tools, k8s_namespace, store, data, "unheld")
    said = f"jobs in {k8s_namespace} stay suspended"
    policies = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
    bindings = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
    policy = f"suspended-{k8s_namespace}"
    api.post(policies, {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["UPDATE"],
                     "resources": ["jobs"]}]},
                 "validations": [{"expression": "object.spec.suspend == true",
                                  "message": said, "reason": "Invalid"}]},
    })  # fmt: skip
    api.post(bindings, {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": k8s_namespace}}}},
    })  # fmt: skip
    patch = ("patch", "-n", k8s_namespace, "--type=merge", "-p")
    try:
        # the API server takes a new policy within a second or so: until it refuses a resume
        resume_job = (*patch, '{"spec": {"suspend": false}}', "job", "ie-unheld")
        wait_until(lambda: said in tools.kubectl(*resume_job, "--dry-run=server").stderr,
                   30, "the admission policy to be in force", interval=0.5)  # fmt: skip
        resumed = tools.kubectl(*patch, '{"spec": {"batch": {"stop": false}}}', "ie", "unheld")
        assert resumed.returncode == 0, resumed.stderr
        by_api = lambda e: e["status"].get("reason") == "ApplyRefused"  # noqa: E731
        refused = wait_phase(api, k8s_namespace, "unheld", "InProgress", timeout=60, also=by_api)
        message = refused["status"]["message"]
        patching = f"the API server refused patching Job {k8s_namespace}/ie-unheld: "
        assert message.startswith(patching) and said in message, message
        job = api.get(f"/apis/batch/v1/namespaces/{k8s_namespace}/jobs/ie-unheld")
        assert job["spec"]["suspend"] is True
    finally:
        api.delete(f"{bindings}/{policy}")
        api.delete(f"{policies}/{policy}")
    wait_phase(api, k8s_namespace, "unheld", "Completed", timeout=300)
    assert sorted(outputs(data, "unheld")) == sorted(f"{key}.out" for key in data["objects"])
