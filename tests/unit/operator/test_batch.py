"""Batch: the Indexed Job for every field, and the status from the Job, its pods' summaries
and the running instances' metrics."""

import json
import os
from dataclasses import replace

import pytest

from infermodes.endpoints import spec as s
from infermodes.endpoints import status as s_
from infermodes.endpoints.demand import Demand
from infermodes.endpoints.plan import batch_instance
from infermodes.operator.modes import batch
from infermodes.operator.modes.base import Signals
from infermodes.operator.observed import WorkloadState
from infermodes.settings import BatchSettings
from tests.unit.operator.test_realtime import REF, check_golden

FULL_SPEC = {
    "mode": "batch",
    "model": {"uri": "s3://models/abalone/model.tar.gz", "allowPickle": True},
    "image": "registry.example/infermodes:test",
    "storageSecretRef": {"name": "s3-credentials"},
    "batch": {
        "input": {"uri": "s3://data/in/", "contentType": "application/jsonlines",
                  "compressionType": "Gzip", "splitType": "Line"},
        "output": {"uri": "s3://data/out/", "accept": "application/jsonlines",
                   "assembleWith": "None"},
        "instanceCount": 3,
        "maxConcurrentTransforms": 2,
        "maxPayloadInMB": 10,
        "batchStrategy": "SingleRecord",
        "invocationsMaxRetries": 1,
        "invocationsTimeoutInSeconds": 30,
        "dataProcessing": {"inputFilter": "$.features", "outputFilter": "$['id','SageMakerOutput']",
                           "joinSource": "Input"},
        "resources": {"cpu": "2", "memory": "4Gi"},
    },
}  # fmt: skip
SPEC = s.EndpointSpec.model_validate(FULL_SPEC)


def test_every_batch_field_reaches_the_job() -> None:
    check_golden("batch-full.yaml", batch.desired_objects(REF, SPEC, 3, "default:img"))


def test_the_plan_reads_back_as_the_spec_says(monkeypatch) -> None:
    for name, value in batch_instance(SPEC, "uid-1").env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    settings = BatchSettings()
    assert (settings.instance_index, settings.instance_count) == (2, 3)
    assert (settings.input_uri, settings.output_uri) == ("s3://data/in/", "s3://data/out/")
    assert (settings.compression_type, settings.batch_strategy) == ("Gzip", "SingleRecord")
    assert (settings.input_filter, settings.join_source) == ("$.features", "Input")
    assert settings.max_payload_in_mb * settings.max_concurrent_transforms == 20
    assert settings.allow_pickle and settings.termination_message_path == "/dev/termination-log"
    assert settings.run_id == "uid-1"  # outputs from before this job are written over
    keeping = s.EndpointSpec.model_validate(
        {**FULL_SPEC, "batch": {**FULL_SPEC["batch"],
                                "output": {**FULL_SPEC["batch"]["output"], "keepExisting": True}}}
    )  # fmt: skip
    for name, value in batch_instance(keeping, "uid-1").env.items():
        monkeypatch.setenv(name, value)
    kept = BatchSettings()  # skips any output that exists, and plans from the job's one listing
    assert (kept.keep_existing, kept.run_id) == (True, "uid-1")


def pod(index: int, created: str, summary: dict | None = None, ip: str | None = None,
        phase: str = "Running") -> dict:  # fmt: skip
    ended = {"terminated": {"exitCode": 0, "message": json.dumps(summary)}}
    state = ended if summary else {"running": {}} if phase == "Running" else {"terminated": {}}
    return {
        "metadata": {"name": f"p{index}-{created}", "creationTimestamp": created,
                     "annotations": {batch.INDEX_ANNOTATION: str(index)}},
        "status": {"podIP": ip, "phase": "Succeeded" if summary else phase,
                   "containerStatuses": [{"state": state}]},
    }  # fmt: skip


def summary(index: int, done: int, failed: int = 0, records: int = 0, failures=()) -> dict:
    return {"version": 1, "index": index, "count": 3, "units": {"assigned": done + failed,
            "succeeded": done, "skipped": 0, "failed": failed}, "records": records,
            "failures": list(failures), "error": None}  # fmt: skip


METRICS = """# TYPE infermodes_batch_units_assigned gauge
infermodes_batch_units_assigned 4.0
# TYPE infermodes_batch_units counter
infermodes_batch_units_total{outcome="succeeded"} 1.0
infermodes_batch_units_total{outcome="skipped"} 1.0
# TYPE infermodes_model_rows_predicted counter
infermodes_model_rows_predicted_total 900.0
# TYPE infermodes_batch_records counter
infermodes_batch_records_total 500.0
"""


def signals(job: dict | None, pods: list[dict]) -> Signals:
    return Signals(
        WorkloadState(exists=job is not None), job, pods, dict,
        lambda ips, port: {ip: METRICS if (ip, port) == ("127.0.0.9", 9090) else None
                           for ip in ips}, lambda: None,
        Demand(), 0.0, 0.0, False,
    )  # fmt: skip


def test_in_progress_sums_summaries_of_ended_instances_and_metrics_of_running_ones() -> None:
    job = {"status": {"active": 1}}
    pods = [
        pod(0, "2026-01-01T00:00:00Z", summary(0, 3, records=1000)),
        pod(1, "2026-01-01T00:00:00Z", ip="127.0.0.8"),  # an older attempt, superseded
        pod(1, "2026-01-01T00:00:05Z", ip="127.0.0.9"),
        pod(2, "2026-01-01T00:00:00Z", ip="127.0.0.10"),  # metrics not readable yet
    ]
    status = batch.observe(SPEC, signals(job, pods), None)
    assert (status.phase, status.reason) == (s.Phase.IN_PROGRESS, "Running")
    assert status.progress is not None
    assert (status.progress.total, status.progress.done, status.progress.records) == (7, 5, 1500)
    assert status.to_patch(1, None)["progress"]["text"] == "5/7"


def test_an_instance_whose_container_cannot_start_is_named_in_the_status() -> None:
    """A missing Secret (or image) keeps an instance waiting: still InProgress (the Job waits,
    and a Secret created later lets it start), but the reason and message say why."""
    job = {"status": {"active": 1}}
    waiting = pod(0, "2026-01-01T00:00:00Z", phase="Pending")
    waiting["status"]["containerStatuses"] = [{"state": {"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "s3" not found'}}}]  # fmt: skip
    status = batch.observe(SPEC, signals(job, [waiting]), None)
    assert (status.phase, status.reason) == (s.Phase.IN_PROGRESS, "ContainerCannotRun")
    assert status.message.endswith(
        f"instance pod {waiting['metadata']['name']} cannot start: "
        'CreateContainerConfigError: secret "s3" not found'
    )
    started = pod(0, "2026-01-01T00:00:00Z")
    assert batch.observe(SPEC, signals(job, [started]), None).reason == "Running"


def test_an_instance_gone_without_a_summary_adds_no_one_elses_progress() -> None:
    """A failed or evicted pod keeps its IP in its status, which a running pod (here of
    another instance) may have been given since: only running pods' metrics are read."""
    job = {"status": {"active": 1}}
    pods = [
        pod(0, "2026-01-01T00:00:00Z", ip="127.0.0.9", phase="Failed"),  # OOM-killed, say
        pod(1, "2026-01-01T00:00:00Z", ip="127.0.0.9"),
    ]
    status = batch.observe(SPEC, signals(job, pods), None)
    assert status.progress is not None
    assert (status.progress.total, status.progress.done, status.progress.records) == (4, 2, 500)


def test_failed_names_each_object_and_line() -> None:
    job = {"status": {"conditions": [{"type": "Failed", "status": "True",
                                      "reason": "FailedIndexes"}]}}  # fmt: skip
    failures = [{"object": "s3://data/in/b.csv", "line": 17, "reason": "column 3: 'x'"}]
    pods = [pod(0, "t", summary(0, 2)), pod(1, "t", summary(1, 1, 1, failures=failures))]
    status = batch.observe(SPEC, signals(job, pods), None)
    assert (status.phase, status.reason) == (s.Phase.FAILED, "ObjectsFailed")
    assert status.message == "s3://data/in/b.csv line 17: column 3: 'x'"
    assert status.progress is not None and status.progress.failed == 1


def test_a_job_with_no_inputs_failed_as_a_job_not_on_its_objects() -> None:
    job = {"status": {"conditions": [{"type": "Failed", "status": "True",
                                      "reason": "FailedIndexes"}]}}  # fmt: skip
    none = "no input objects under s3://data/in/"
    ended = summary(0, 0)
    ended["error"] = none
    status = batch.observe(SPEC, signals(job, [pod(0, "t", ended)]), None)
    assert (status.phase, status.reason, status.message) == (s.Phase.FAILED, "JobFailed", none)


def test_a_job_failed_by_instances_that_left_no_summary_says_how_each_ended() -> None:
    """An instance killed by the OOM killer on its last retry leaves no summary: the job's
    FailureReason was the Job's own word, "Job has failed indexes", naming no cause (up said
    "instance 0 exited with -9 without a summary"). What the kubelet said of the pod is told."""
    job = {"status": {"conditions": [{"type": "Failed", "status": "True",
                                      "reason": "FailedIndexes",
                                      "message": "Job has failed indexes"}]}}  # fmt: skip
    killed = pod(1, "2026-01-01T00:00:09Z", phase="Failed")
    oom = {"exitCode": 137, "reason": "OOMKilled", "message": "INFO instance 1 of 2: 3 units"}
    killed["status"]["containerStatuses"] = [{"state": {"terminated": oom}}]
    pods = [pod(0, "2026-01-01T00:00:00Z", summary(0, 2)),
            pod(1, "2026-01-01T00:00:00Z", phase="Failed"), killed]  # fmt: skip
    status = batch.observe(SPEC, signals(job, pods), None)
    assert (status.phase, status.reason) == (s.Phase.FAILED, "JobFailed")
    assert status.message == (
        f"instance 1 (pod {killed['metadata']['name']}) ended without a summary: OOMKilled "
        "(exit code 137): INFO instance 1 of 2: 3 units"
    )


def test_a_job_failed_by_many_instances_without_summaries_names_a_few() -> None:
    """Each such instance brings the tail of its log: a hundred would make the status (and
    DescribeTransformJob's FailureReason) hundreds of KiB; a few are named, the rest counted."""
    job = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    killed = []
    for index in range(12):
        dead = pod(index, "2026-01-01T00:00:00Z", phase="Failed")
        dead["status"]["containerStatuses"] = [{"state": {"terminated": {"exitCode": 137}}}]
        killed.append(dead)
    status = batch.observe(SPEC, signals(job, killed), None)
    assert status.message.count("ended without a summary") == 5
    assert status.message.endswith("; and 7 more"), status.message


def test_completed_and_stopped() -> None:
    done = {"status": {"conditions": [{"type": "Complete", "status": "True",
                                       "lastTransitionTime": "2026-01-01T00:10:00Z"}]}}  # fmt: skip
    completed = batch.observe(SPEC, signals(done, [pod(0, "t", summary(0, 4))]), None)
    assert completed.phase is s.Phase.COMPLETED
    assert completed.to_patch(1, None)["endTime"] == "2026-01-01T00:10:00Z"
    assert completed.desired_replicas == 0  # kubectl get ie: an ended job wants no pods
    running = batch.observe(SPEC, signals({"status": {"active": 2}}, []), None)
    assert running.desired_replicas == SPEC.batch_block().instance_count
    stopping = s.EndpointSpec.model_validate(
        {**FULL_SPEC, "batch": {**FULL_SPEC["batch"], "stop": True}}
    )
    assert batch.desired_objects(REF, stopping, 3, "img")[0]["spec"]["suspend"] is True
    still = batch.observe(stopping, signals({"status": {"active": 2}}, []), None)
    assert (still.phase, still.reason) == (s.Phase.IN_PROGRESS, "Stopping")
    suspended = {
        "type": "Suspended",
        "status": "True",
        "lastTransitionTime": "2026-01-01T00:05:00Z",
    }
    # the Job no longer counts a pod it is deleting, which still writes its summary there
    terminating = pod(0, "2026-01-01T00:00:00Z")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:05:00Z"
    unwinding = signals({"status": {"conditions": [suspended]}}, [terminating])
    exiting = batch.observe(stopping, unwinding, None)
    assert (exiting.phase, exiting.message) == (s.Phase.IN_PROGRESS, "1 instance(s) stopping")
    stopped = batch.observe(stopping, signals({"status": {"conditions": [suspended]}}, []), None)
    assert stopped.phase is s.Phase.STOPPED and stopped.desired_replicas == 0
    assert stopped.end_time == "2026-01-01T00:05:00Z"
    assert "endTime" not in still.to_patch(1, None)  # running: not ended
    assert still.to_patch(1, {"endTime": "2026-01-01T00:05:00Z"})["endTime"] is None  # resumed
    # the stop deleted its pods and what they said: the progress seen last stays (it was 0/0)
    seen = s_.Progress(total=80, done=40, failed=0, records=4000)
    written = s_.Status(s.Phase.IN_PROGRESS, "Stopping", "", progress=seen).to_patch(1, None)
    last = s_.Status.from_dict(written)  # as the next reconcile reads it from the object
    kept = batch.observe(stopping, signals({"status": {"conditions": [suspended]}}, []), last)
    assert kept.progress == seen


def test_a_running_job_reports_no_scale_from_zero() -> None:
    """A Job has no replicas to scale: its active instances are not a pool at zero that
    started, so no ``ScaledFromZero`` event at each reconcile."""
    from infermodes.endpoints.scaling import ScalerMemory
    from infermodes.operator.reconcile import reconcile
    from tests.unit.operator.test_realtime import FakeKube, body, deps

    class JobKube(FakeKube):
        def apply(self, obj):  # the API answers an apply with the live object
            applied = super().apply(obj)
            return {**applied, "status": {"active": 3}} if obj["kind"] == "Job" else applied

    job = {"metadata": {"generation": 1}, "spec": {"parallelism": 3}, "status": {"active": 3}}
    kube = JobKube(job)
    d, _ = deps(kube)
    memory = ScalerMemory()
    for _ in range(3):
        result = reconcile(body(FULL_SPEC), memory, d)
        assert result.status.phase is s.Phase.IN_PROGRESS
        assert result.events == []


def test_an_instance_no_node_has_room_for_is_named_in_the_status() -> None:
    job = {"status": {"active": 1}}
    pending = pod(1, "2026-01-01T00:00:00Z", phase="Pending")
    no_room = "0/1 nodes are available: 1 Insufficient cpu."
    pending["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": no_room}
    ]
    status = batch.observe(SPEC, signals(job, [pending]), None)
    assert (status.phase, status.reason) == (s.Phase.IN_PROGRESS, "Unschedulable")
    assert (status.replicas, status.ready_replicas) == (1, 0)  # active, but not ready
    assert status.message.endswith(
        f"instance pod {pending['metadata']['name']} cannot be scheduled: {no_room}"
    )


def test_pods_the_job_cannot_create_are_named_from_its_newest_event() -> None:
    """A quota of pods: the Job has no pod for an instance and no condition says why; its
    newest FailedCreate Event does, until a newer SuccessfulCreate. Events are read only while
    an instance has no pod."""
    quota = ('Error creating: pods "ie-transform-0-x" is forbidden: exceeded quota: no-pods, '
             "requested: pods=1, used: pods=0, limited: pods=0")  # fmt: skip

    def event(reason: str, at: str, message: str = "") -> dict:
        return {"reason": reason, "lastTimestamp": at, "message": message}

    refused = [event("FailedCreate", "2026-01-01T00:00:09Z", quota),
               event("SuccessfulCreate", "2026-01-01T00:00:01Z", "Created pod: p1")]  # fmt: skip
    read: list[int] = []

    def observed(pods: list[dict], events: list[dict]) -> s_.Status:
        found = signals({"status": {"active": len(pods)}}, pods)
        found = replace(found, workload_events=lambda: read.append(1) or events)
        return batch.observe(SPEC, found, None)

    running = [pod(i, "2026-01-01T00:00:00Z") for i in range(3)]
    assert observed(running, refused).reason == "Running" and read == []  # every instance has one
    status = observed(running[:1], refused)
    assert (status.phase, status.reason) == (s.Phase.IN_PROGRESS, "FailedCreate")
    assert status.message.endswith(f"instance pods cannot be created: {quota}")
    mended = [*refused, event("SuccessfulCreate", "2026-01-01T00:00:20Z", "Created pod: p2")]
    assert observed(running[:2], mended).reason == "Running"
    assert observed([], []).reason == "Running"  # a new Job: nothing said yet


def test_events_that_cannot_be_listed_leave_the_status_saying_less_not_failing() -> None:
    """A role without the chart's rule to list Events (or an API that flakes): the reconcile
    of a Job whose pods do not exist yet goes on; the Job's own UID narrows what is read."""
    from infermodes.endpoints.scaling import ScalerMemory
    from infermodes.operator.kube import KubeError
    from infermodes.operator.reconcile import reconcile
    from tests.unit.operator.test_realtime import FakeKube, body, deps

    class NoEvents(FakeKube):
        def list(self, api_version, kind, namespace, selector, fields=None):
            if kind == "Event":
                self.asked = fields
                raise KubeError("events is forbidden")
            return super().list(api_version, kind, namespace, selector, fields)

    kube = NoEvents(deployment={"metadata": {"uid": "job-uid"}, "status": {"active": 0}})
    d, _ = deps(kube)
    status = reconcile(body(FULL_SPEC), ScalerMemory(), d).status
    assert (status.phase, status.reason) == (s.Phase.IN_PROGRESS, "Running")
    assert kube.asked == {"involvedObject.kind": "Job", "involvedObject.name": "ie-abalone",
                          "involvedObject.uid": "job-uid"}  # fmt: skip


def test_a_job_deleted_after_it_ended_is_not_run_again() -> None:
    """Deleting a finished transform's Job (by hand, or a clean-up) keeps its outcome: no Job
    is applied, which would run every instance anew. One deleted while it runs is remade."""
    from infermodes.endpoints.scaling import ScalerMemory
    from infermodes.operator.reconcile import reconcile
    from tests.unit.operator.test_realtime import FakeKube, body, deps

    for reason, phase in (("Completed", "Completed"), ("ObjectsFailed", "Failed")):
        kube = FakeKube()
        d, _ = deps(kube)
        ended = {"phase": phase, "reason": reason, "message": "5 records", "replicas": 0}
        result = reconcile(body(FULL_SPEC, ended), ScalerMemory(), d)
        assert kube.applied == []
        assert (result.status.phase.value, result.status.reason) == (phase, reason)
        gone = "its Job was deleted and is not made again: delete and re-create the endpoint"
        assert result.status.message == f"5 records; {gone}"
        again = {**ended, "message": result.status.message}
        assert reconcile(body(FULL_SPEC, again), ScalerMemory(), d).status.message.count(gone) == 1

    kube = FakeKube()
    d, _ = deps(kube)
    running = {"phase": "InProgress", "reason": "Running", "message": "1/5 objects"}
    reconcile(body(FULL_SPEC, running), ScalerMemory(), d)
    assert [obj["kind"] for obj in kube.applied] == ["Job"]


def test_a_job_is_applied_once_and_then_only_suspended_or_resumed() -> None:
    """A Job's template never changes: an operator of another version makes another one, which
    the API refuses (immutable). It was applied whole at every reconcile, so after an operator
    upgrade that changed the template a running job showed ApplyRefused, and its stop (which
    travelled in that apply) never reached it. An ended job's Job is not touched at all; a
    running one is patched only when ``stop`` asks for another ``suspend``."""
    from infermodes.endpoints.scaling import ScalerMemory
    from infermodes.operator.kube import ApplyRefused
    from infermodes.operator.reconcile import reconcile
    from tests.unit.operator.test_realtime import FakeKube, body, deps

    class ImmutableJob(FakeKube):
        def apply(self, obj):
            raise ApplyRefused('applying Job ie-abalone: Job "ie-abalone" is invalid: immutable')

    done = {"metadata": {"generation": 1}, "spec": {},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]}}  # fmt: skip
    kube = ImmutableJob(done)
    d, _ = deps(kube)
    completed = {"phase": "Completed", "reason": "Completed", "message": "5 records"}
    status = reconcile(body(FULL_SPEC, completed), ScalerMemory(), d).status
    assert (status.phase, status.reason) == (s.Phase.COMPLETED, "Completed")

    running = {"metadata": {"generation": 1}, "spec": {"suspend": False}, "status": {"active": 3}}
    kube = ImmutableJob(running)
    d, _ = deps(kube)
    progress = {"phase": "InProgress", "reason": "Running", "message": "1/5 objects"}
    status = reconcile(body(FULL_SPEC, progress), ScalerMemory(), d).status
    assert (status.phase, status.reason) == (s.Phase.IN_PROGRESS, "Running")
    assert kube.patched == []  # nothing to change
    stop = {**FULL_SPEC, "batch": {**FULL_SPEC["batch"], "stop": True}}
    status = reconcile(body(stop, progress), ScalerMemory(), d).status
    assert kube.patched == [("Job", {"suspend": True})]
    assert status.reason != "ApplyRefused", status
    kube.deployment = done  # the Job ends
    status = reconcile(body(FULL_SPEC, progress), ScalerMemory(), d).status
    assert (status.phase, status.reason) == (s.Phase.COMPLETED, "Completed")


@pytest.mark.parametrize(
    ("status", "refused"),
    [(400, True), (403, True), (422, True),  # the same write again cannot mend these
     (404, False), (409, False), (429, False), (500, False), (503, False), (None, False)],
)  # fmt: skip
def test_a_write_the_api_server_refuses_is_told_from_one_worth_retrying(
    status: int | None, refused: bool
) -> None:
    from infermodes.operator.kube import ApplyRefused, KubeError, write_failed

    error = write_failed(status, "patching Job models/ie-abalone: why")
    assert isinstance(error, KubeError) and str(error) == "patching Job models/ie-abalone: why"
    assert isinstance(error, ApplyRefused) is refused


def test_a_suspend_patch_the_api_server_refuses_is_in_the_status_with_its_reason() -> None:
    """The Job's ``suspend`` patch refused (a Job replaced by hand, an admission policy): it
    was a KubeError retried at every resync with nothing in the status, the stop or resume
    never made. Now the status says it with the API server's words (reason ApplyRefused, the
    job InProgress as its Job is), and the next resync tries again."""
    from infermodes.endpoints.scaling import ScalerMemory
    from infermodes.operator.kube import ApplyRefused, KubeError, write_failed
    from infermodes.operator.reconcile import reconcile
    from tests.unit.operator.test_realtime import FakeKube, body, deps

    said = ('patching Job models/ie-abalone: Job.batch "ie-abalone" is invalid: spec.suspend: '
            "denied by policy no-suspend")  # fmt: skip

    class RefusingPatch(FakeKube):
        """The API server answering each patch with ``status`` (as ``KubeDoor`` raises it)."""

        status = 422

        def patch_spec(self, api_version, kind, namespace, name, fields):
            self.patched.append((kind, fields))
            raise write_failed(self.status, said)

    running = {"metadata": {"generation": 1}, "spec": {"suspend": False}, "status": {"active": 3}}
    kube = RefusingPatch(running)
    d, _ = deps(kube)
    progress = {"phase": "InProgress", "reason": "Running", "message": "1/5 objects"}
    stop = {**FULL_SPEC, "batch": {**FULL_SPEC["batch"], "stop": True}}
    status = reconcile(body(stop, progress), ScalerMemory(), d).status
    assert kube.patched == [("Job", {"suspend": True})]
    assert (status.phase, status.reason) == (s.Phase.IN_PROGRESS, "ApplyRefused")
    assert status.message.startswith(f"the API server refused {said}"), status.message

    suspended = {"type": "Suspended", "status": "True"}
    stopped = {"metadata": {"generation": 1}, "spec": {"suspend": True},
               "status": {"conditions": [suspended]}}  # fmt: skip
    kube = RefusingPatch(stopped)
    d, _ = deps(kube)
    was = {"phase": "Stopped", "reason": "Stopped", "message": "stopped"}
    status = reconcile(body(FULL_SPEC, was), ScalerMemory(), d).status
    assert kube.patched == [("Job", {"suspend": False})]
    assert (status.phase, status.reason) == (s.Phase.IN_PROGRESS, "ApplyRefused")
    assert said in status.message
    # not an end: the next resync patches again, and the job resumes once it is taken
    refused = {"phase": status.phase.value, "reason": status.reason, "message": status.message}
    again = reconcile(body(FULL_SPEC, refused), ScalerMemory(), d).status
    assert kube.patched == [("Job", {"suspend": False})] * 2 and said in again.message
    kube.status = 409  # a conflict: the reconcile is retried, the status left as it was
    with pytest.raises(KubeError) as caught:
        reconcile(body(FULL_SPEC, was), ScalerMemory(), d)
    assert not isinstance(caught.value, ApplyRefused)


def test_the_output_hold_resolves_no_path_of_an_ended_or_newer_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """up asks for the hold on every supervisor tick of a held job, against all its batch
    endpoints (hundreds of ended CreateTransformJob ones): a file:// folder resolved with
    os.path.realpath for each blocked its supervisor. Only an older job not ended can hold
    the output, so only its folder is resolved."""
    resolved: list[str] = []
    realpath = os.path.realpath

    def counted(path: str) -> str:
        resolved.append(path)
        return realpath(path)

    monkeypatch.setattr(os.path, "realpath", counted)
    mine = s_.BatchOutput("mine", "2026-03-01T10:00:00Z", "file:///tmp/out/", ended=False)
    ended = [
        s_.BatchOutput(f"ended-{n}", "2026-03-01T09:00:00Z", f"file:///tmp/e{n}/", ended=True)
        for n in range(3)
    ]
    newer = s_.BatchOutput("newer", "2026-03-01T11:00:00Z", "file:///tmp/out/", ended=False)
    assert s_.output_held_by(mine, [*ended, newer]) is None
    assert resolved == []
    holder = s_.BatchOutput("holder", "2026-03-01T09:00:00Z", "file:///tmp/out/x/", ended=False)
    assert s_.output_held_by(mine, [*ended, newer, holder]) == "holder"
    assert set(resolved) == {"/tmp/out/", "/tmp/out/x/"}


def test_a_job_waits_for_an_older_one_writing_an_overlapping_output_prefix() -> None:
    """Two jobs writing one prefix at once each skipped the other's outputs as their own: each
    object ended with either job's output, both Completed. The younger one now makes no Job
    and says whom it waits for; once that one ended (or cannot be listed), its Job is made."""
    from infermodes.endpoints.scaling import ScalerMemory
    from infermodes.operator.reconcile import reconcile
    from tests.unit.operator.test_realtime import FakeKube, body, deps

    def job(endpoint: str, created: str, uri: str, ended: bool = False) -> s_.BatchOutput:
        return s_.BatchOutput(endpoint, created, uri, ended)

    mine = job("models/abalone", "2026-03-01T10:00:00Z", "s3://data/out/")
    older, newer = "2026-03-01T09:00:00Z", "2026-03-01T11:00:00Z"
    assert s_.output_held_by(mine, [mine, job("a/x", older, "s3://data/out")]) == "a/x"
    assert s_.output_held_by(mine, [job("a/x", older, "s3://data/out/day-1/")]) == "a/x"
    assert s_.output_held_by(mine, [job("a/x", older, "s3://data/")]) == "a/x"
    assert s_.output_held_by(mine, [job("a/x", older, "s3://data/out-2/")]) is None
    assert s_.output_held_by(mine, [job("a/x", older, "s3://data/out/", ended=True)]) is None
    assert s_.output_held_by(mine, [job("a/x", newer, "s3://data/out/")]) is None  # it waits
    same_second = job("models/aaa", "2026-03-01T10:00:00Z", "s3://data/out/")
    assert s_.output_held_by(mine, [same_second]) == "models/aaa"
    # a file:// folder by another name is the same folder (storage.prefix_within)
    alias = job("models/abalone", "2026-03-01T10:00:00Z", "file:///tmp/../tmp//out-x/")
    assert s_.output_held_by(alias, [job("a/x", older, "file:///tmp/out-x")]) == "a/x"

    kube = FakeKube()
    d, _ = deps(kube)
    d.batch_outputs = lambda _ns, _name: [job("team-a/first", older, "s3://data/out/")]
    later = body(FULL_SPEC)
    later["metadata"]["creationTimestamp"] = "2026-03-01T10:00:00Z"
    status = reconcile(later, ScalerMemory(), d).status
    assert (status.phase, status.reason) == (s.Phase.IN_PROGRESS, "OutputInUse")
    assert status.message.startswith("waits for batch endpoint team-a/first, which writes")
    assert kube.applied == []
    d.batch_outputs = lambda _ns, _name: [job("team-a/first", older, "s3://data/out/", ended=True)]
    assert reconcile(later, ScalerMemory(), d).status.reason != "OutputInUse"
    assert [obj["kind"] for obj in kube.applied] == ["Job"]


def test_a_job_the_platform_api_made_is_told_to_wait_in_the_api_s_own_calls() -> None:
    """An OutputInUse job told a boto3 user to "delete this one and create it with an
    output.uri of its own": the platform API has no DeleteTransformJob and no output.uri (r60,
    item 9). A job CreateTransformJob made (its label) names StopTransformJob and
    S3OutputPath; one applied as YAML keeps the spec's words."""
    from infermodes.endpoints.scaling import ScalerMemory
    from infermodes.operator.reconcile import reconcile
    from tests.unit.operator.test_realtime import FakeKube, body, deps

    d, _ = deps(FakeKube())
    older = s_.BatchOutput("team-a/first", "2026-03-01T09:00:00Z", "s3://data/out/", False)
    d.batch_outputs = lambda _ns, _name: [older]
    for labels, words, not_words in (
        ({s.PLATFORM_KIND_LABEL: s.PLATFORM_TRANSFORM_JOB},
         "; StopTransformJob this job and create one under another name with an S3OutputPath "
         "of its own to run it now", "delete"),
        ({}, "; delete this one and create it with an output.uri of its own to run it now",
         "TransformJob"),
        ({s.PLATFORM_KIND_LABEL: "Endpoint"}, "; delete this one", "TransformJob"),
    ):  # fmt: skip
        later = body(FULL_SPEC)
        later["metadata"]["creationTimestamp"] = "2026-03-01T10:00:00Z"
        later["metadata"]["labels"] = labels
        status = reconcile(later, ScalerMemory(), d).status
        assert status.reason == "OutputInUse", status
        assert status.message.startswith("waits for batch endpoint team-a/first, which writes")
        assert words in status.message, status.message
        assert not_words not in status.message, status.message


def test_a_stopped_transform_job_of_the_platform_api_holds_no_output_prefix() -> None:
    """A Stopped job may resume (``spec.batch.stop`` back to false) and keeps its output
    prefix; one the platform API made cannot (StopTransformJob is final there), so the job
    created next on that output, through the API as a user would, runs: it waited InProgress
    for as long as the stopped one was kept."""
    from infermodes.operator.signals.names import AsyncNames
    from tests.unit.operator.test_async import ListingKube

    def job(name: str, phase: str, api: bool) -> dict:
        labels = {s.PLATFORM_KIND_LABEL: s.PLATFORM_TRANSFORM_JOB} if api else {}
        meta = {"namespace": "p", "name": name, "creationTimestamp": "T1", "labels": labels}
        spec = {"mode": "batch", "batch": {"output": {"uri": "s3://data/out/"}}}
        return {"metadata": meta, "spec": spec, "status": {"phase": phase}}

    kube = ListingKube([job("by-api", "Stopped", True), job("by-hand", "Stopped", False),
                        job("api-running", "InProgress", True),
                        job("api-done", "Completed", True)])  # fmt: skip
    names = AsyncNames(kube, lambda: 0.0)  # type: ignore[arg-type]
    listed = {o.endpoint: o.ended for o in names.batch_outputs("p", "by-api") or []}
    assert listed == {"p/by-api": True, "p/by-hand": False, "p/api-running": False,
                      "p/api-done": True}  # fmt: skip


def dotted_job() -> dict:
    """A batch spec whose output.uri has a '.' segment, which releases before the check took."""
    spec = json.loads(json.dumps(FULL_SPEC))
    spec["batch"]["output"]["uri"] = "s3://data/./out/"
    return spec


@pytest.mark.parametrize(
    ("phase", "reason"), [(s.Phase.COMPLETED, "Completed"), (s.Phase.IN_PROGRESS, "Running")]
)
def test_a_job_an_earlier_release_took_with_a_dotted_uri_stays_as_it_was(
    phase: s.Phase, reason: str
) -> None:
    """After an upgrade, a job applied under a release that took such a URI was re-parsed at
    each reconcile and made Failed, InvalidSpec: a Completed job's history rewritten, one in
    flight failed by the upgrade. The check is for specs being admitted (a new endpoint, a
    changed spec); one the endpoint ran before is parsed as it was."""
    from infermodes.endpoints.scaling import ScalerMemory
    from infermodes.operator.reconcile import reconcile
    from tests.unit.operator.test_realtime import FakeKube, body, deps

    spec = dotted_job()
    ran = {"phase": phase.value, "reason": reason, "message": "5 records"}
    kept, refused, _ = s_.in_force(spec, ran)
    assert refused is None and kept is not None
    assert kept.batch is not None and kept.batch.output.uri == "s3://data/./out/"
    # the same, as the operator recorded the spec its Job was applied from
    applied = {**ran, **s_.AppliedSpec.of(1, spec).status_fields()}
    assert s_.in_force(spec, applied)[1] is None
    d, _ = deps(FakeKube())
    status = reconcile(body(spec, applied), ScalerMemory(), d).status
    assert (status.phase, status.reason) == (phase, reason), status


def test_a_new_job_or_a_change_to_a_dotted_uri_is_refused() -> None:
    """Only a spec the endpoint ran before is spared the check: a new one, one a refusal of
    the check made Failed, and an update to a dotted URI (the applied spec keeps serving) are
    refused naming the segment."""
    spec = dotted_job()
    for status in (None, {"phase": "Failed", "reason": s_.INVALID_SPEC}):
        kept, refused, _ = s_.in_force(spec, status)
        assert kept is None and refused is not None and "has a '.' segment" in refused
    earlier = {"phase": "InProgress", **s_.AppliedSpec.of(1, FULL_SPEC).status_fields()}
    kept, refused, runs = s_.in_force(spec, earlier)
    assert refused is not None and "spec.batch.output.uri" in refused, refused
    assert kept is not None and kept.batch is not None
    assert (kept.batch.output.uri, runs) == ("s3://data/out/", 1)
