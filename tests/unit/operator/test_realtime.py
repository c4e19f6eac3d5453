"""Realtime desired objects, status from observed state, and one reconcile with a fake API."""

import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from infermodes.endpoints import spec as s
from infermodes.endpoints.demand import Demand, GatewayDemand, annotation_key
from infermodes.endpoints.plan import replica_template
from infermodes.endpoints.scaling import ScalerMemory
from infermodes.endpoints.status import Status, rfc3339
from infermodes.metrics import ServerLoad as PodLoad
from infermodes.metrics import parse_server_load as parse_load
from infermodes.operator.modes import MODES, realtime
from infermodes.operator.modes.base import Signals
from infermodes.operator.objects import EndpointRef
from infermodes.operator.observed import TEMPLATE_GENERATION, PodState, WorkloadState, failure
from infermodes.operator.reconcile import Deps, note_template, reconcile
from infermodes.settings import OperatorSettings

GOLDEN = Path(__file__).parent / "golden"
MODEL = {"uri": "file:///m"}
SPEC = s.EndpointSpec.model_validate({"mode": "realtime", "model": MODEL, "realtime": {}})
REF = EndpointRef("abalone", "models", "uid-1", 2)
FULL_SPEC = {
    "mode": "realtime",
    "model": {"uri": "s3://models/abalone/model.tar.gz", "allowPickle": True},
    "image": "registry.example/infermodes:test",
    "storageSecretRef": {"name": "s3-credentials"},
    "realtime": {
        "minReplicas": 2,
        "maxReplicas": 6,
        "initialReplicas": 3,
        "workers": 3,
        "resources": {"cpu": "1500m", "memory": "2Gi"},
        "scaling": {"metric": "InFlightRequestsPerInstance", "target": 4},
    },
}


def observed(workload: WorkloadState) -> Signals:
    """Signals carrying only the workload, as ``observe`` reads them."""
    return Signals(
        workload, None, [], dict, lambda ips, port: {}, lambda: None, Demand(), 0.0, 0.0, False
    )


def check_golden(name: str, objects: list[dict]) -> None:
    path = GOLDEN / name
    text = yaml.safe_dump_all(objects, sort_keys=True)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_every_realtime_field_reaches_the_objects() -> None:
    """initialReplicas included: the Deployment a new endpoint gets starts with 3 replicas."""
    spec = s.EndpointSpec.model_validate(FULL_SPEC)
    first = realtime.replicas(spec, observed(WorkloadState(exists=False)), ScalerMemory())
    check_golden("realtime-full.yaml", realtime.desired_objects(REF, spec, first, "default:img"))


def test_defaults_and_operator_image() -> None:
    spec = s.EndpointSpec.model_validate(
        {"mode": "realtime", "model": {"uri": "file:///m.tar.gz"}, "realtime": {}}
    )
    deployment, service = realtime.desired_objects(REF, spec, 1, "default:img")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "default:img"
    assert "envFrom" not in container
    assert {"name": "INFERMODES_SERVE_ALLOW_PICKLE", "value": "true"} not in container["env"]
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def pod(name: str, ready: bool, **state) -> PodState:
    return PodState(name=name, ip="127.0.5.1", ready=ready, **state)


@pytest.mark.parametrize(
    ("workload", "previous", "phase", "reason"),
    [
        (WorkloadState(exists=False), None, s.Phase.CREATING, "Creating"),
        (
            WorkloadState(True, 3, 1, 3, True, [pod("a", True), pod("b", False), pod("c", False)]),
            Status(s.Phase.IN_SERVICE),
            s.Phase.IN_SERVICE,
            "Scaling",
        ),
        (
            WorkloadState(True, 2, 1, 2, True, [pod("a", True), pod("b", False)]),
            None,
            s.Phase.CREATING,
            "Creating",
        ),
        (  # its only replica lost (deleted, its node gone) and being replaced: no update
            WorkloadState(True, 1, 0, 1, True, [pod("b", False)]),
            Status(s.Phase.IN_SERVICE),
            s.Phase.IN_SERVICE,
            "Scaling",
        ),
        (  # a new template over no replica (from serverless at zero) rolled out at once
            WorkloadState(True, 1, 0, 1, True, [pod("b", False)]),
            Status(s.Phase.UPDATING, "RollingOut"),
            s.Phase.UPDATING,
            "RollingOut",
        ),
        (
            WorkloadState(True, 2, 2, 2, True, [pod("a", True), pod("b", True)]),
            None,
            s.Phase.IN_SERVICE,
            "AllReplicasReady",
        ),
        (
            WorkloadState(True, 2, 2, 1, False, [pod("a", True), pod("b", True)]),
            Status(s.Phase.IN_SERVICE),
            s.Phase.UPDATING,
            "RollingOut",
        ),
        (
            WorkloadState(
                True,
                1,
                0,
                1,
                True,
                [pod("a", False, exit_code=3, restarts=1, message="no such object: file:///x")],
            ),
            None,
            s.Phase.FAILED,
            "ModelLoadFailed",
        ),
        (  # an update whose model cannot load while the old replica serves: still served
            WorkloadState(
                True,
                1,
                1,
                0,
                False,
                [pod("old", True), pod("new", False, exit_code=3, restarts=2, message="x")],
            ),
            Status(s.Phase.IN_SERVICE),
            s.Phase.UPDATING,
            "ModelLoadFailed",
        ),
        (  # ... and at the next reconcile, from Updating
            WorkloadState(
                True,
                1,
                1,
                0,
                False,
                [pod("old", True), pod("new", False, exit_code=3, restarts=3, message="x")],
            ),
            Status(s.Phase.UPDATING, "ModelLoadFailed"),
            s.Phase.UPDATING,
            "ModelLoadFailed",
        ),
        (  # no replica of the previous spec left: failed
            WorkloadState(
                True, 1, 0, 0, False, [pod("new", False, exit_code=3, restarts=2, message="x")]
            ),
            Status(s.Phase.IN_SERVICE),
            s.Phase.FAILED,
            "ModelLoadFailed",
        ),
        (  # its model loaded once the kubelet restarted it (the file arrived): serving again,
            # whatever its last run said (the endpoint stayed Failed, the gateway refusing it)
            WorkloadState(
                True,
                2,
                2,
                2,
                True,
                [pod("a", True), pod("b", True, exit_code=3, restarts=1, message="x")],
            ),
            Status(s.Phase.FAILED, "ModelLoadFailed"),
            s.Phase.IN_SERVICE,
            "AllReplicasReady",
        ),
        (  # ... the rollout of a fix whose model came after it: done, and in service
            WorkloadState(True, 1, 1, 1, True, [pod("new", True, exit_code=3, restarts=4)]),
            Status(s.Phase.UPDATING, "ModelLoadFailed"),
            s.Phase.IN_SERVICE,
            "AllReplicasReady",
        ),
        (
            WorkloadState(True, 1, 0, 1, True, [pod("a", False, waiting_reason="ErrImagePull")]),
            None,
            s.Phase.FAILED,
            "ContainerCannotRun",
        ),
        (
            WorkloadState(True, 1, 0, 1, True, [pod("a", False, exit_code=1, restarts=5)]),
            None,
            s.Phase.FAILED,
            "ContainerCrashing",
        ),
    ],
)
def test_status_from_observed_state(workload, previous, phase, reason) -> None:
    status = realtime.observe(SPEC, observed(workload), previous)
    assert (status.phase, status.reason) == (phase, reason)


def test_pod_state_from_an_api_object() -> None:
    state = PodState.from_pod({
        "metadata": {"name": "p"},
        "status": {
            "podIP": "127.0.3.4",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{
                "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                "lastState": {"terminated": {"exitCode": 3, "message": "cannot load model"}},
            }],
        },
    })  # fmt: skip
    assert state == PodState("p", "127.0.3.4", False, 2, 3, "CrashLoopBackOff", "cannot load model")


UNSCHEDULABLE = "0/1 nodes are available: 1 Insufficient cpu."
QUOTA = 'pods "ie-abalone-7d9-x" is forbidden: exceeded quota: pods, limited: pods=0'


def deployment_refused(message: str) -> dict:
    """A Deployment whose ReplicaSet the API refuses pods, as the controller reports it."""
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
             "message": message},
        ]},
    }  # fmt: skip


def pending_pod(name: str) -> dict:
    return {
        "metadata": {"name": name},
        "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": UNSCHEDULABLE},
        ]},
    }  # fmt: skip


def test_pods_that_cannot_be_created_or_placed_are_named_while_the_endpoint_waits() -> None:
    """A quota or an admission policy refusing the pods (FailedCreate), or no node with room
    (Unschedulable): not Failed, as either mends by itself, but the status says why nothing
    comes up instead of 'Creating' for ever."""
    refused = WorkloadState.from_objects(deployment_refused(QUOTA), [])
    status = realtime.observe(SPEC, observed(refused), None)
    assert (status.phase, status.reason) == (s.Phase.CREATING, "FailedCreate")
    assert status.message == f"0/1 replicas ready; pods cannot be created: {QUOTA}"

    placing = {**deployment_of(1), "status": {"observedGeneration": 1, "replicas": 1}}
    pending = WorkloadState.from_objects(placing, [pending_pod("ie-abalone-1")])
    assert pending.pods[0].unschedulable == UNSCHEDULABLE
    status = realtime.observe(SPEC, observed(pending), None)
    assert (status.phase, status.reason) == (s.Phase.CREATING, "Unschedulable")
    assert status.message.endswith(f"pod ie-abalone-1 cannot be scheduled: {UNSCHEDULABLE}")

    # scaling out a serving endpoint: still in service, the reason says why replicas lag
    two = WorkloadState(True, 2, 1, 2, True, [pod("a", True), pod("b", False, unschedulable="x")])
    status = realtime.observe(SPEC, observed(two), Status(s.Phase.IN_SERVICE))
    assert (status.phase, status.reason) == (s.Phase.IN_SERVICE, "Unschedulable")
    # every wanted replica ready (an extra pod pending): nothing to say
    ready = WorkloadState(True, 1, 1, 1, True, [pod("a", True), pod("b", False, unschedulable="x")])
    assert realtime.observe(SPEC, observed(ready), None).reason == "AllReplicasReady"


def test_status_patch_keeps_transition_time_while_unchanged() -> None:
    first = Status(s.Phase.IN_SERVICE, "AllReplicasReady").to_patch(1, None)
    again = Status(s.Phase.IN_SERVICE, "AllReplicasReady").to_patch(1, first)
    assert again == first
    failed = Status(s.Phase.FAILED, "X").to_patch(1, first)
    assert failed["conditions"][0]["status"] == "False"


def test_parse_load_reads_only_invocations() -> None:
    text = (
        'infermodes_http_request_duration_seconds_count{route="/invocations",status_code="200"} 7\n'
        'infermodes_http_request_duration_seconds_count{route="/invocations",status_code="400"} 2\n'
        'infermodes_http_request_duration_seconds_count{route="/ping",status_code="200"} 50\n'
        "infermodes_http_requests_in_flight 3\n"
    )
    assert parse_load(text) == PodLoad(9, 3)


class FakeKube:
    """Records applies; serves a Deployment and pods as the API would."""

    def __init__(self, deployment=None, pods=(), others=()):
        self.deployment = deployment
        self.pods = list(pods)
        self.others = {(o["kind"], o["metadata"]["name"]): o for o in others}
        self.applied: list[dict] = []
        self.scaled: list[int] = []
        self.patched: list[tuple[str, dict]] = []
        self.annotated: list[tuple[str, dict]] = []
        self.events: list[dict] = []
        self.deleted: list[tuple[str, str]] = []

    def get(self, api_version, kind, namespace, name):
        if kind in ("Deployment", "Job"):  # the workload the operator made: its owner's
            if self.deployment is None:
                return None
            owner = {"kind": "InferenceEndpoint", "name": name.removeprefix("ie-")}
            metadata = {"ownerReferences": [owner], **self.deployment.get("metadata", {})}
            return {**self.deployment, "metadata": metadata}
        return self.others.get((kind, name))

    def list(self, api_version, kind, namespace, selector, fields=None):
        return self.pods if kind == "Pod" else self.events

    def annotate(self, api_version, kind, namespace, name, annotations):
        self.annotated.append((kind, annotations))
        if kind == "Deployment" and self.deployment is not None:
            metadata = self.deployment.get("metadata", {})
            merged = {**metadata.get("annotations", {}), **annotations}
            self.deployment = {**self.deployment, "metadata": {**metadata, "annotations": merged}}

    def patch_spec(self, api_version, kind, namespace, name, fields):
        if kind == "Deployment":
            self.scaled.append(fields["replicas"])
        self.patched.append((kind, fields))
        spec = {**self.deployment["spec"], **fields}
        self.deployment = {**self.deployment, "spec": spec}
        return self.deployment

    def delete(self, api_version, kind, namespace, name, uid=None):
        self.deleted.append((kind, name))
        self.others.pop((kind, name), None)

    def apply(self, obj):
        self.applied.append(obj)
        if obj["kind"] not in ("Deployment", "Job"):
            self.others[(obj["kind"], obj["metadata"]["name"])] = obj
        if obj["kind"] == "Deployment":
            live = {**obj, "metadata": {**obj["metadata"], "generation": 1}}
            live["status"] = (self.deployment or {}).get("status", {})
            return live
        return obj


def body(spec=None, status=None):
    return {
        "metadata": {"name": "abalone", "namespace": "models", "uid": "uid-1", "generation": 1},
        "spec": spec or {"mode": "realtime", "model": MODEL, "realtime": {}},
        "status": status,
    }


SPEC_SECRETS = ["s3-credentials", "rabbit"]  # what the FULL_SPECs name, as if allowed


def deps(kube, loads=None, now=1000.0, allow_pickle=True):
    clock = [now]
    # the specs' images and Secrets here; FULL_SPEC loads a pickle
    settings = OperatorSettings(allowed_images=["registry.example/*"], allow_pickle=allow_pickle,
                                allowed_secret_names=SPEC_SECRETS)  # fmt: skip
    return Deps(kube, settings, lambda ip, port: (loads or {}).get(ip), lambda: clock[0]), clock


def test_an_image_the_operator_was_not_told_to_run_fails_the_endpoint_naming_it() -> None:
    """Whoever may create an endpoint would otherwise run any image with the namespace's
    Secrets it names."""
    from infermodes.operator.reconcile import reconcile

    kube = FakeKube()
    spec = {"mode": "realtime", "model": MODEL, "realtime": {}, "image": "attacker.example/x:1"}
    result = reconcile(body(spec), ScalerMemory(), deps(kube)[0])
    assert (result.status.phase, result.status.reason) == (s.Phase.FAILED, "InvalidSpec")
    assert "spec.image 'attacker.example/x:1' is not an image this operator runs" in (
        result.status.message
    )
    assert kube.applied == []
    own = {**spec, "image": OperatorSettings().image}  # its own image: always
    assert reconcile(body(own), ScalerMemory(), deps(kube)[0]).status.reason != "InvalidSpec"


def test_a_secret_the_operator_was_not_told_to_give_fails_the_endpoint_naming_it() -> None:
    """Whoever may create an endpoint named any Secret of its namespace and had pods use it
    (another team's storage credentials, for a batch job copying their data out)."""
    from infermodes.operator.reconcile import reconcile

    kube = FakeKube()
    told = Deps(kube, OperatorSettings(), lambda ip, port: None, lambda: 1000.0)  # the default
    spec = {"mode": "realtime", "model": MODEL, "realtime": {}}
    for name in ("payments-db", "infermodes", "s3-infermodes-x"):
        named = {**spec, "storageSecretRef": {"name": name}}
        result = reconcile(body(named), ScalerMemory(), told)
        assert (result.status.phase, result.status.reason) == (s.Phase.FAILED, "InvalidSpec")
        assert f"spec.storageSecretRef.name {name!r} is not a Secret" in result.status.message
        assert "operator.allowedSecretNames" in result.status.message
        assert kube.applied == []
    meant = {**spec, "storageSecretRef": {"name": "infermodes-s3"}}  # the convention
    assert reconcile(body(meant), ScalerMemory(), told).status.reason != "InvalidSpec"
    assert OperatorSettings().allowed_secret_names == ["infermodes-*"]


def test_a_pickle_the_operator_was_not_told_to_load_fails_the_endpoint() -> None:
    """Unpickling runs the artifact's code: an endpoint that could ask for it would run any
    code in its pods, with the Secrets it names, which operator.allowedImages is there to
    prevent. Only an operator told so (operator.allowPickle) lets endpoints load pickles."""
    from infermodes.operator.reconcile import reconcile

    kube = FakeKube()
    pickled = {"uri": "s3://models/evil.pkl", "allowPickle": True}
    spec = {"mode": "realtime", "model": pickled, "realtime": {}}
    result = reconcile(body(spec), ScalerMemory(), deps(kube, allow_pickle=False)[0])
    assert (result.status.phase, result.status.reason) == (s.Phase.FAILED, "InvalidSpec")
    assert "spec.model.allowPickle" in result.status.message
    assert "operator.allowPickle" in result.status.message
    assert kube.applied == []
    told = deps(kube, allow_pickle=True)[0]
    assert reconcile(body(spec), ScalerMemory(), told).status.reason != "InvalidSpec"
    assert OperatorSettings().allow_pickle is False  # the default: no endpoint unpickles


@pytest.mark.parametrize(
    ("image", "allowed", "runs"),
    [("r.example/team/m:1", ["r.example/team/*"], True),
     ("r.example/teamx:1", ["r.example/team/*"], False),
     ("r.example/m:1", ["r.example/m:1"], True), ("r.example/m:2", ["r.example/m:1"], False),
     # a prefix without a boundary of its own matches only at one: '/', ':' or '@'
     ("r.example/team-evil/x:1", ["r.example/team*"], False),
     ("r.example/teamx:1", ["r.example/team*"], False),
     ("r.example/team/m:1", ["r.example/team*"], True),
     ("r.example/team:1", ["r.example/team*"], True),
     ("r.example/team@sha256:" + "a" * 64, ["r.example/team*"], True),
     ("r.example/team", ["r.example/team*"], True),
     ("r.example.evil.io/m:1", ["r.example*"], False),
     ("r.example/m:1", ["r.example*"], True),
     # a ':' followed by a '/' is a registry's port: another registry, not a tag
     ("r.example:5000/evil:1", ["r.example*"], False),
     ("r.example:5000/evil:1", ["r.example:*"], False),
     ("nginx:5000/evil", ["nginx*"], False),
     ("nginx:1.25", ["nginx*"], True), ("nginx:1.25", ["nginx:*"], True),
     ("r.example/m@sha256:" + "b" * 64, ["r.example/m@*"], True),
     ("r.example/team/m:1", ["r.example/team/*"], True),
     ("anything/at:all", ["*"], True)],
)  # fmt: skip
def test_allowed_images_are_exact_or_prefixes(image: str, allowed: list[str], runs: bool) -> None:
    from infermodes.settings import image_allowed

    assert image_allowed(image, "own:1", allowed) is runs


def test_a_prefix_from_the_charts_env_does_not_run_a_neighbouring_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``registry.example/team*`` (as the chart passes operator.allowedImages) ran
    ``registry.example/team-evil/x``, a repository someone else may push to."""
    from infermodes.operator.reconcile import reconcile

    monkeypatch.setenv("INFERMODES_OPERATOR_ALLOWED_IMAGES", '["registry.example/team*"]')
    settings = OperatorSettings()
    kube = FakeKube()
    told = Deps(kube, settings, lambda ip, port: None, lambda: 1000.0)
    spec = {"mode": "realtime", "model": MODEL, "realtime": {}}
    evil = reconcile(
        body({**spec, "image": "registry.example/team-evil/x:1"}), ScalerMemory(), told
    )
    assert (evil.status.phase, evil.status.reason) == (s.Phase.FAILED, "InvalidSpec")
    assert "registry.example/team-evil/x:1" in evil.status.message and kube.applied == []
    for image in ("registry.example/team:2", "registry.example/team/model:1"):
        ran = reconcile(body({**spec, "image": image}), ScalerMemory(), told)
        assert ran.status.reason != "InvalidSpec", image


def test_reconcile_creates_objects_and_is_idempotent() -> None:
    kube = FakeKube()
    d, _ = deps(kube)
    status = reconcile(body(), ScalerMemory(), d).status
    assert status.phase is s.Phase.CREATING
    first = list(kube.applied)
    reconcile(body(), ScalerMemory(), d)
    assert kube.applied[len(first) :] == first  # the same desired objects again
    assert [o["kind"] for o in first] == ["Deployment", "Service"]


def test_invalid_specs_fail_with_reasons() -> None:
    kube = FakeKube()
    d, _ = deps(kube)
    status = reconcile(body({"mode": "realtime", "model": MODEL}), ScalerMemory(), d).status
    assert (status.phase, status.reason) == (s.Phase.FAILED, "InvalidSpec")
    assert kube.applied == []


def ready_pod(name: str, ip: str) -> dict:
    return {
        "metadata": {"name": name},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def in_flight_spec(**scaling: object) -> dict:
    """A realtime endpoint of 1 to 3 replicas scaled on 2 requests in flight per replica."""
    scaling = {"metric": "InFlightRequestsPerInstance", "target": 2, **scaling}
    return {"mode": "realtime", "model": MODEL,
            "realtime": {"minReplicas": 1, "maxReplicas": 3, "scaling": scaling}}  # fmt: skip


def deployment_of(replicas: int) -> dict:
    """A Deployment whose replicas are all ready and current."""
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas,
                   "updatedReplicas": replicas},
    }  # fmt: skip


def test_autoscaling_follows_in_flight_load_within_bounds() -> None:
    spec = in_flight_spec(scaleInCooldownSeconds=0)
    deployment = deployment_of(1)
    kube = FakeKube(deployment, [ready_pod("a", "127.0.9.1")])
    d, clock = deps(kube, {"127.0.9.1": PodLoad(0, 5)})
    memory = ScalerMemory()
    reconcile(body(spec), memory, d, autoscale=True)
    assert kube.applied[-2]["spec"]["replicas"] == 3
    d.scrape = lambda ip, port: PodLoad(0, 0)
    clock[0] += 1
    reconcile(body(spec), memory, d, autoscale=True)
    assert kube.applied[-2]["spec"]["replicas"] == 1


def test_a_restarted_operator_keeps_the_scale_in_cooldown_of_the_last_change() -> None:
    """The last change's time is in the status (``lastScaleTime``): a fresh memory (the
    operator restarted) counts the cooldown from it instead of scaling in at once."""
    spec = in_flight_spec(scaleInCooldownSeconds=300)
    deployment = deployment_of(3)
    kube = FakeKube(deployment, [ready_pod("a", "127.0.9.1")])
    d, _ = deps(kube, {"127.0.9.1": PodLoad(0, 0)})
    wall = [1_000_000.0]
    d.wall_clock = lambda: wall[0]
    scaled = {"phase": "InService", "lastScaleTime": rfc3339(wall[0] - 60)}
    held = reconcile(body(spec, scaled), ScalerMemory(), d, autoscale=True).status
    assert kube.applied[-2]["spec"]["replicas"] == 3  # 60 s of a 300 s cooldown
    assert held.to_patch(1, scaled)["lastScaleTime"] == scaled["lastScaleTime"]
    scaled["lastScaleTime"] = rfc3339(wall[0] - 301)
    done = reconcile(body(spec, scaled), ScalerMemory(), d, autoscale=True).status
    assert kube.applied[-2]["spec"]["replicas"] == 1
    assert done.last_scale_time == rfc3339(wall[0])  # this change, for the next restart
    reconcile(body(spec), ScalerMemory(), d, autoscale=True)  # no time recorded: as before
    assert kube.applied[-2]["spec"]["replicas"] == 1


def test_invocation_rate_needs_two_samples() -> None:
    spec = {
        "mode": "realtime",
        "model": {"uri": "file:///m"},
        "realtime": {"minReplicas": 1, "maxReplicas": 4, "scaling": {"target": 60}},
    }
    deployment = {"metadata": {"generation": 1}, "spec": {"replicas": 1}, "status": {}}
    kube = FakeKube(deployment, [ready_pod("a", "127.0.9.1")])
    loads = {"127.0.9.1": PodLoad(100, 0)}
    d, clock = deps(kube, loads)
    memory = ScalerMemory()
    reconcile(body(spec), memory, d, autoscale=True)
    assert kube.applied[-2]["spec"]["replicas"] == 1  # one sample: no rate yet
    loads["127.0.9.1"] = PodLoad(100 + 150, 0)  # 150 invocations in 30 s = 300/min
    clock[0] += 30
    reconcile(body(spec), memory, d, autoscale=True)
    assert kube.applied[-2]["spec"]["replicas"] == 4  # ceil(300 / 60) = 5, clamped to 4


def test_model_load_reason_is_taken_from_the_log_tail() -> None:
    tail = ("INFO listening\nERROR infermodes.serve: cannot load model: no such object: file:///m\n"
            "INFO:     Shutting down")  # fmt: skip
    workload = WorkloadState(True, 1, 0, 1, True, [pod("a", False, exit_code=3, message=tail)])
    status = realtime.observe(SPEC, observed(workload), None)
    assert status.message == "model cannot be loaded: no such object: file:///m"


def test_every_mode_has_its_module() -> None:
    assert set(MODES) == set(s.Mode)


def test_a_serverless_endpoint_made_realtime_keeps_one_clock_for_its_cooldowns() -> None:
    """The memory outlives a change between serverless and realtime (one Deployment): both
    modes time their cooldowns on the monotonic clock, so the realtime scaler is not frozen by
    a serverless change stamped on the wall clock."""
    serverless = {"mode": "serverless", "model": {"uri": "file:///m"}, "serverless": {}}
    realtime = in_flight_spec(scaleOutCooldownSeconds=0)
    deployment = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 0},
        "status": {"observedGeneration": 1, "replicas": 0, "readyReplicas": 0},
    }
    kube = FakeKube(deployment, [ready_pod("a", "127.0.9.1")])
    d, clock = deps(kube, {"127.0.9.1": PodLoad(0, 5)})
    d.wall_clock = lambda: 1.8e9
    memory = ScalerMemory()
    held = body(serverless)
    entry = GatewayDemand("gw", in_flight=0, held=1, last_request_at=1.8e9, at=1.8e9)
    held["metadata"]["annotations"] = {annotation_key("gw"): entry.to_annotation()}
    reconcile(held, memory, d, autoscale=True)
    assert kube.applied[-2]["spec"]["replicas"] == 1  # a cold start: one replica
    deployment["spec"]["replicas"] = deployment["status"]["replicas"] = 1
    clock[0] += 1
    reconcile(body(realtime), memory, d, autoscale=True)
    assert kube.applied[-2]["spec"]["replicas"] == 3  # 5 in flight at 2 per replica


def test_an_object_of_the_endpoints_names_that_someone_else_owns_is_left_alone() -> None:
    """A user's own Service (or Deployment) named ``ie-<name>``: a forced apply would take it
    over and the endpoint's deletion would delete it. Nothing is applied; the endpoint says
    which object is in the way."""
    theirs = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ie-abalone"}}
    kube = FakeKube(others=[theirs])
    d, _ = deps(kube)
    status = reconcile(body(), ScalerMemory(), d).status
    assert (status.phase, status.reason) == (s.Phase.FAILED, "NameConflict")
    assert "a Service ie-abalone already exists in namespace models" in status.message
    assert kube.applied == []

    class TheirDeployment(FakeKube):
        def get(self, api_version, kind, namespace, name):
            return {"metadata": {"name": name}} if kind == "Deployment" else None

    kube = TheirDeployment()
    d, _ = deps(kube)
    status = reconcile(body(), ScalerMemory(), d).status
    assert status.reason == "NameConflict" and "a Deployment ie-abalone" in status.message
    assert kube.applied == []


def test_an_object_the_api_refuses_fails_the_endpoint_naming_the_refusal() -> None:
    """A quota or an admission policy refusing the Deployment: Failed with the API's words
    (it was a retry loop with no status) while nothing runs; an update refused while the live
    Deployment serves: Updating with its counts; a refusal with nothing live, whatever the
    last status said: Failed. A later reconcile that the API accepts mends it."""
    from infermodes.operator.kube import ApplyRefused

    refusal = 'applying Deployment ie-abalone: deployments.apps "ie-abalone" is forbidden: quota'

    class RefusingKube(FakeKube):
        refuse = True

        def apply(self, obj):
            if self.refuse and obj["kind"] == "Deployment":
                raise ApplyRefused(refusal)
            return super().apply(obj)

    kube = RefusingKube()
    d, _ = deps(kube)
    failed = reconcile(body(), ScalerMemory(), d).status
    assert (failed.phase, failed.reason) == (s.Phase.FAILED, "ApplyRefused")
    assert failed.message.startswith(f"the API server refused {refusal}; applied again")
    serving = {"phase": "InService", "reason": "AllReplicasReady", "replicas": 1}
    nothing_live = reconcile(body(status=serving), ScalerMemory(), d).status
    assert (nothing_live.phase, nothing_live.reason) == (s.Phase.FAILED, "ApplyRefused")

    live = RefusingKube(deployment_of(1), [ready_pod("ie-abalone-1", "127.0.5.1")])
    d, _ = deps(live)
    kept = reconcile(body(status=serving), ScalerMemory(), d).status
    assert (kept.phase, kept.reason, kept.ready_replicas) == (s.Phase.UPDATING, "ApplyRefused", 1)
    assert kept.message.endswith("the spec it had still serves: 1/1 replicas ready")
    # the spec it had still scales: a new minimum reaches the live Deployment's replicas
    two = {"mode": "realtime", "model": MODEL, "realtime": {"minReplicas": 2}}
    reconcile(body(two, serving), ScalerMemory(), d)
    assert live.scaled == [2] and live.deployment["spec"]["replicas"] == 2
    # a new endpoint never served: Failed while refused, whatever its pods do (no flip from
    # Failed to Creating to Updating as they come up)
    fresh = RefusingKube(deployment_of(1), [ready_pod("ie-abalone-1", "127.0.5.1")])
    d, _ = deps(fresh)
    for status in (None, {"phase": "Failed", "reason": "ApplyRefused"}):
        assert reconcile(body(status=status), ScalerMemory(), d).status.phase is s.Phase.FAILED
    kube.refuse = False
    d, _ = deps(kube)
    assert reconcile(body(), ScalerMemory(), d).status.reason == "Creating"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (Status(s.Phase.FAILED, "InvalidSpec"), "Warning"),
        (Status(s.Phase.UPDATING, "ModelLoadFailed"), "Warning"),  # the old spec serves
        (Status(s.Phase.UPDATING, "InvalidSpec"), "Warning"),  # the old spec serves
        (Status(s.Phase.CREATING, "Unschedulable"), "Warning"),
        (Status(s.Phase.IN_SERVICE, "BrokerUnreadable"), "Warning"),
        (Status(s.Phase.UPDATING, "RollingOut"), "Normal"),
        (Status(s.Phase.IN_SERVICE, "AllReplicasReady"), "Normal"),
    ],
)
def test_events_warn_of_problems_whatever_the_phase(status: Status, kind: str) -> None:
    from infermodes.operator.handlers import event_type

    assert event_type(status) == kind


def test_a_phase_change_is_news_once_whatever_body_the_next_reconcile_reads() -> None:
    """kopf's body and the nudger's may both predate the last status write: the change is
    told (an Event) once, then not again from a stale body; a restarted operator (no memory)
    compares with the body's status."""
    from infermodes.operator.handlers import EndpointState, run_locked

    d, _ = deps(FakeKube(deployment_of(1), [ready_pod("ie-abalone-1", "127.0.5.1")]))
    state = EndpointState()
    stale = body(status={"phase": "Creating", "reason": "Creating"})
    first, changed = run_locked(stale, state, d, autoscale=False)
    assert (first.status.reason, changed) == ("AllReplicasReady", True)
    assert run_locked(stale, state, d, autoscale=False)[1] is False
    current = body(status={"phase": "InService", "reason": "AllReplicasReady"})
    assert run_locked(current, EndpointState(), d, autoscale=False)[1] is False


@pytest.mark.parametrize("mode", ["realtime", "serverless"])
def test_a_crashing_pod_on_its_way_out_does_not_fail_an_endpoint_that_serves(mode: str) -> None:
    """An update that could not roll out, reverted: the Deployment is back on the previous
    spec, whose replica serves, and deletes the new spec's crash-looping pod. Until that pod is
    gone it says it cannot load its model, but it no longer stands for the spec: the endpoint
    serves (InService), it is not Failed (which the gateway refuses with 400 for a moment)."""
    crashed = {"terminated": {"exitCode": 3, "message": "cannot load model: no such object"}}
    leaving = PodState.from_pod({
        "metadata": {"name": "new", "deletionTimestamp": "2026-12-05T22:00:00Z"},
        "status": {"phase": "Running", "podIP": "127.0.3.5", "containerStatuses": [{
            "restartCount": 2, "lastState": crashed,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2s"}}}]},
    })  # fmt: skip
    reverted = WorkloadState(True, 1, 1, 1, True, [pod("old", True), leaving])
    spec = s.EndpointSpec.model_validate({"mode": mode, "model": MODEL, mode: {}})
    signals = observed(reverted)
    if mode == "serverless":  # the previous spec's template, which loaded before
        signals = replace(signals, loaded_template=replica_template(spec))
    status = MODES[s.Mode(mode)].observe(spec, signals, Status(s.Phase.UPDATING, "ModelLoadFailed"))
    assert (status.phase, status.reason) == (s.Phase.IN_SERVICE, "AllReplicasReady")


def test_a_secret_the_node_authorizer_has_not_yet_linked_is_a_moment_not_a_failure() -> None:
    """A new pod's kubelet may be refused its Secret until the node authorizer links the pod to
    the node ('no relationship found'), and reads it again at once: that made a serverless cold
    start Failed (ContainerCannotRun) and its held requests 400s. A missing Secret still fails."""
    race = ('secrets "s3" is forbidden: User "system:node:n1" cannot get resource "secrets" in '
            "API group \"\" in the namespace \"m\": no relationship found between node 'n1' and "
            "this object")  # fmt: skip
    waiting = WorkloadState(exists=True, replicas=1, ready=0, updated=1, rolled_out=True,
                            pods=[pod("a", False, waiting_reason="CreateContainerConfigError",
                                      message=race)])  # fmt: skip
    assert failure(waiting) is None
    missing = WorkloadState(exists=True, replicas=1, ready=0, updated=1, rolled_out=True,
                            pods=[pod("a", False, waiting_reason="CreateContainerConfigError",
                                      message='secret "s3" not found')])  # fmt: skip
    assert failure(missing) == ("ContainerCannotRun",
                                'CreateContainerConfigError: secret "s3" not found')  # fmt: skip


def deployment_at(generation: int, observed: int, replicas: int, pods: int, updated: int,
                  noted: int | None) -> dict:  # fmt: skip
    """A Deployment at ``generation`` whose controller has seen ``observed``, its pod template
    noted at ``noted`` (None: never noted); ``pods`` live, ``updated`` of its template, all
    ready."""
    annotations = {} if noted is None else {TEMPLATE_GENERATION: str(noted)}
    return {
        "metadata": {"generation": generation, "annotations": annotations},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": observed, "replicas": pods, "readyReplicas": pods,
                   "updatedReplicas": updated},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("deployment", "phase", "reason"),
    [
        # an autoscaler's step the controller has not seen yet, out and in: no rollout
        (deployment_at(5, 4, 2, 1, 1, noted=4), s.Phase.IN_SERVICE, "Scaling"),
        (deployment_at(5, 4, 1, 2, 2, noted=4), s.Phase.IN_SERVICE, "AllReplicasReady"),
        # the same, seen, one pod still to come
        (deployment_at(5, 5, 2, 1, 1, noted=4), s.Phase.IN_SERVICE, "Scaling"),
        # a new template the controller has not seen, and one it rolls out (old pods left)
        (deployment_at(5, 4, 2, 2, 2, noted=5), s.Phase.UPDATING, "RollingOut"),
        (deployment_at(5, 5, 2, 3, 1, noted=5), s.Phase.UPDATING, "RollingOut"),
        # never noted (an operator before this one): an unseen generation may be a template
        (deployment_at(5, 4, 1, 2, 2, noted=None), s.Phase.UPDATING, "RollingOut"),
    ],
)
def test_a_change_of_replicas_alone_is_no_rollout(
    deployment: dict, phase: s.Phase, reason: str
) -> None:
    """Every autoscaler step made a Deployment generation the controller had not seen: the
    endpoint said Updating (RollingOut), with an Event pair, at each step, until it had.
    Only a pod template not seen yet, or pods of an older one left, is a rollout."""
    workload = WorkloadState.from_objects(deployment, [])
    serving = Status(s.Phase.IN_SERVICE, "AllReplicasReady")
    status = realtime.observe(SPEC, observed(workload), serving)
    assert (status.phase, status.reason) == (phase, reason), status


def test_the_generation_of_a_new_pod_template_is_noted_once_on_the_deployment() -> None:
    """Compared as the API answers both (its defaults filled in): a change of replicas alone
    notes nothing; a Deployment noted by no operator yet gets its generation before the
    apply, a change of unknown kind."""
    kube = FakeKube()
    d, _ = deps(kube)
    template = {"spec": {"containers": [{"name": "server", "image": "a"}]}}

    def live(generation: int, image: str, replicas: int, noted: int | None) -> dict:
        annotations = {} if noted is None else {TEMPLATE_GENERATION: str(noted)}
        changed = {"spec": {"containers": [{"name": "server", "image": image}]}}
        return {"metadata": {"generation": generation, "annotations": annotations},
                "spec": {"replicas": replicas, "template": changed}}  # fmt: skip

    assert template == live(1, "a", 1, None)["spec"]["template"]
    created = note_template(d, REF, None, live(1, "a", 1, None))
    assert created["metadata"]["annotations"][TEMPLATE_GENERATION] == "1"
    scaled = note_template(d, REF, live(3, "a", 1, 2), live(4, "a", 2, 2))
    assert scaled["metadata"]["annotations"][TEMPLATE_GENERATION] == "2"
    rolled = note_template(d, REF, live(4, "a", 2, 2), live(5, "b", 2, 2))
    assert rolled["metadata"]["annotations"][TEMPLATE_GENERATION] == "5"
    upgraded = note_template(d, REF, live(7, "b", 2, None), live(8, "b", 3, None))
    assert upgraded["metadata"]["annotations"][TEMPLATE_GENERATION] == "7"
    assert [value for _, value in kube.annotated] == [
        {TEMPLATE_GENERATION: "1"},
        {TEMPLATE_GENERATION: "5"},
        {TEMPLATE_GENERATION: "7"},
    ]  # one write each, none for a change of replicas alone


def test_an_update_the_operator_refuses_keeps_the_spec_it_had_serving() -> None:
    """spec.image changed on a live endpoint to one operator.allowedImages does not list (a
    mistyped registry, say): the endpoint was Failed and the gateway refused every invocation,
    though the replicas of the spec it had were ready, where an update the API server refuses
    keeps it Updating, serving and scaling (as the platform keeps an endpoint on its old config
    when an update fails). Refused for the spec its replicas run (the list narrowed since they
    started): Failed, as before."""
    made = FakeKube()
    reconcile(body(), ScalerMemory(), deps(made)[0])
    applied = next(o for o in made.applied if o["kind"] == "Deployment")
    live = {**deployment_of(1), "metadata": {**applied["metadata"], "generation": 1}}
    kube = FakeKube(live, [ready_pod("ie-abalone-1", "127.0.5.1")])
    serving = {"phase": "InService", "reason": "AllReplicasReady", "replicas": 1}
    image = "attacker.example/x:1"
    spec = {"mode": "realtime", "model": MODEL, "realtime": {"minReplicas": 2}, "image": image}
    updated = body(spec, serving)
    updated["metadata"]["generation"] = 2
    kept = reconcile(updated, ScalerMemory(), deps(kube)[0]).status
    assert (kept.phase, kept.reason, kept.ready_replicas) == (s.Phase.UPDATING, "InvalidSpec", 1)
    assert f"spec.image {image!r} is not an image this operator runs" in kept.message
    assert all(o["kind"] != "Deployment" for o in kube.applied)  # nothing of the refused spec
    assert kube.scaled == [2]  # the spec it had still scales: the new minimum
    assert kept.message.endswith("the spec it had still serves: 1/2 replicas ready")
    narrowed = FakeKube(live, [ready_pod("ie-abalone-1", "127.0.5.1")])
    running = reconcile(body(spec, serving), ScalerMemory(), deps(narrowed)[0]).status
    assert (running.phase, running.reason) == (s.Phase.FAILED, "InvalidSpec")
    assert narrowed.applied == [] and narrowed.scaled == []


@pytest.mark.parametrize("mode", ["realtime", "serverless"])
def test_one_crash_looping_replica_does_not_fail_an_endpoint_its_other_replicas_serve(
    mode: str,
) -> None:
    """A rolled-out endpoint whose one pod crash-loops (a bad node, a sick disk) while the
    others serve: it serves (InService, as the platform keeps an endpoint in service while it
    replaces a failed instance), the reason and message saying which pod keeps crashing. It was
    Failed: DescribeEndpoint said so and a wait for InService gave up on a serving endpoint. A
    first start whose pods all crash still fails; one with a replica ready serves."""
    looping = pod("c", False, exit_code=137, restarts=5, message="OOMKilled")
    serving = WorkloadState(True, 3, 2, 3, True, [pod("a", True), pod("b", True), looping])
    spec = s.EndpointSpec.model_validate({"mode": mode, "model": MODEL, mode: {}})
    status = MODES[s.Mode(mode)].observe(
        spec, observed(serving), Status(s.Phase.IN_SERVICE, "AllReplicasReady")
    )
    assert (status.phase, status.reason) == (s.Phase.IN_SERVICE, "ContainerCrashing")
    assert status.message.startswith("2/3 replicas ready; pod c keeps crashing: OOMKilled")
    alone = WorkloadState(True, 1, 0, 1, True, [looping])
    status = MODES[s.Mode(mode)].observe(spec, observed(alone), None)
    assert (status.phase, status.reason) == (s.Phase.FAILED, "ContainerCrashing")
    first = WorkloadState(True, 2, 1, 2, True, [pod("a", True), looping])
    status = MODES[s.Mode(mode)].observe(spec, observed(first), None)
    assert (status.phase, status.reason) == (s.Phase.IN_SERVICE, "ContainerCrashing")


def test_an_update_the_operator_cannot_parse_keeps_the_spec_it_had_serving() -> None:
    """A spec the CRD took and the operator cannot parse (a CRD older than the operator: helm
    never upgrades a chart's CRDs): a serving endpoint went Failed with 0 replicas on the
    update, where a refused update keeps the spec its replicas run serving. With no applied
    spec recorded in the status (replicas an older operator applied) nothing is applied or
    scaled (the spec they run is not this one; with one, it is actuated: test_serverless); a
    new endpoint's such spec stays Failed."""
    made = FakeKube()
    reconcile(body(), ScalerMemory(), deps(made)[0])
    applied = next(o for o in made.applied if o["kind"] == "Deployment")
    live = {**deployment_of(2), "metadata": {**applied["metadata"], "generation": 1}}
    kube = FakeKube(live, [ready_pod("ie-abalone-1", "127.0.5.1")])
    serving = {"phase": "InService", "reason": "AllReplicasReady", "replicas": 2}
    unparsable = {"mode": "realtime", "model": MODEL, "realtime": {"minReplicas": 3,
                                                                   "maxReplicas": 2}}  # fmt: skip
    updated = body(unparsable, serving)
    updated["metadata"]["generation"] = 2
    kept = reconcile(updated, ScalerMemory(), deps(kube)[0]).status
    assert (kept.phase, kept.reason, kept.ready_replicas) == (s.Phase.UPDATING, "InvalidSpec", 2)
    assert kept.message.startswith("spec.realtime: minReplicas must not exceed maxReplicas; ")
    assert "the spec it had still serves: 2/2 replicas ready" in kept.message
    assert kube.applied == [] and kube.scaled == []
    created = FakeKube()
    new = reconcile(body(unparsable), ScalerMemory(), deps(created)[0]).status
    assert (new.phase, new.reason, new.ready_replicas) == (s.Phase.FAILED, "InvalidSpec", 0)
