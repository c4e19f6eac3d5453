"""Serverless: the demand contract, the replica decision at its edges, desired objects, status,
and one reconcile driven by a gateway's demand annotation."""

from dataclasses import replace

import pytest

from infermodes.endpoints import spec as s
from infermodes.endpoints.demand import (
    STALE_SECONDS,
    Demand,
    GatewayDemand,
    annotation_key,
)
from infermodes.endpoints.plan import replica_template
from infermodes.endpoints.scaling import (
    SERVERLESS_SCALE_IN_DELAY_SECONDS,
    ScalerMemory,
    serverless_bounds,
    serverless_replicas,
)
from infermodes.endpoints.status import Status, serverless_phase
from infermodes.operator.modes import serverless
from infermodes.operator.modes.base import Signals
from infermodes.operator.observed import PodState, WorkloadState
from infermodes.operator.reconcile import reconcile
from tests.unit.operator.test_realtime import REF, FakeKube, check_golden, deps, observed

FULL_SPEC = {
    "mode": "serverless",
    "model": {"uri": "s3://models/abalone/model.tar.gz"},
    "image": "registry.example/infermodes:test",
    "storageSecretRef": {"name": "s3-credentials"},
    "serverless": {
        "memorySizeInMB": 3072,
        "maxConcurrency": 40,
        "idleTimeoutSeconds": 60,
        "provisionedConcurrency": 5,
        "concurrencyPerReplica": 4,
    },
}
NOW = 1_000_000.0


def block(**fields: object) -> s.ServerlessSpec:
    return s.ServerlessSpec.model_validate(fields)


def entry(gateway: str, in_flight: int = 0, held: int = 0, last: float = 0.0, at: float = NOW):
    demand = GatewayDemand(gateway, in_flight, held, last, at)
    return annotation_key(gateway), demand.to_annotation()


def serverless_spec(**serverless: object) -> s.EndpointSpec:
    return s.EndpointSpec.model_validate(
        {"mode": "serverless", "model": {"uri": "file:///m"}, "serverless": serverless}
    )


def with_template(spec: s.EndpointSpec, workload: WorkloadState) -> Signals:
    """The signals of a Deployment applied with the spec's template (its annotation)."""
    noted = {"metadata": {"annotations": {serverless.REPLICA_TEMPLATE: replica_template(spec)}}}
    return replace(observed(workload), workload_object=noted, now=NOW, wall=NOW)


def loaded(spec: s.EndpointSpec, workload: WorkloadState) -> Signals:
    """... whose template's model a replica loaded before (the status remembers it)."""
    return replace(with_template(spec, workload), loaded_template=replica_template(spec))


def test_demand_sums_fresh_gateways_and_ignores_stale_and_foreign_entries() -> None:
    annotations = dict(
        [
            entry("gw-a", in_flight=3, held=1, last=NOW - 5),
            entry("gw-b", in_flight=2, last=NOW - 1),
            entry("gw-dead", in_flight=50, last=NOW - 500, at=NOW - STALE_SECONDS - 1),
        ]
    )
    annotations[annotation_key("broken")] = "{not json"
    annotations["other.io/annotation"] = '{"inFlight": 99}'
    demand = Demand.from_annotations(annotations, NOW)
    assert (demand.in_flight, demand.held, demand.active) == (5, 1, 6)
    assert demand.last_request_at == NOW - 1
    assert annotation_key("gw-a") != annotation_key("gw-b")
    assert len(annotation_key("x" * 253).split("/", 1)[1]) <= 63


def test_bounds_are_concurrency_in_replicas() -> None:
    assert serverless_bounds(block(maxConcurrency=20, concurrencyPerReplica=10)) == (0, 2)
    assert serverless_bounds(
        block(maxConcurrency=21, provisionedConcurrency=11, concurrencyPerReplica=10)
    ) == (2, 3)


def test_a_held_request_activates_a_replica_at_once() -> None:
    memory = ScalerMemory(last_change_at=NOW)  # a change a moment ago does not delay activation
    assert serverless_replicas(block(), 0, Demand(held=1), memory, NOW, NOW) == 1


def test_scale_out_follows_demand_up_to_max_concurrency() -> None:
    spec = block(maxConcurrency=30, concurrencyPerReplica=10)
    memory = ScalerMemory()
    assert (
        serverless_replicas(spec, 1, Demand(in_flight=11, last_request_at=NOW), memory, NOW, NOW)
        == 2
    )
    assert serverless_replicas(spec, 2, Demand(in_flight=95), memory, NOW, NOW) == 3


def test_scale_in_waits_for_the_delay_but_one_replica_stays_until_idle() -> None:
    spec = block(idleTimeoutSeconds=60, concurrencyPerReplica=10)
    memory = ScalerMemory(last_change_at=NOW)
    quiet = Demand(last_request_at=NOW)
    assert serverless_replicas(spec, 3, quiet, memory, NOW + 1, NOW + 1) == 3
    later = NOW + SERVERLESS_SCALE_IN_DELAY_SECONDS
    assert serverless_replicas(spec, 3, quiet, memory, later, later) == 1
    assert serverless_replicas(spec, 1, quiet, memory, NOW + 59.9, NOW + 59.9) == 1


@pytest.mark.parametrize(("idle_for", "replicas"), [(59.9, 1), (61.9, 1), (62.0, 0), (600.0, 0)])
def test_idle_timeout_edges(idle_for: float, replicas: int) -> None:
    """Idle for the timeout and the time a gateway may take to report a request (2 s): a
    request just before the timeout, not reported yet, found its replica gone."""
    spec = block(idleTimeoutSeconds=60)
    memory = ScalerMemory(last_change_at=NOW + idle_for)  # scale-in delay never holds zero back
    demand = Demand(last_request_at=NOW)
    assert serverless_replicas(spec, 1, demand, memory, NOW + idle_for, NOW + idle_for) == replicas


def test_provisioned_concurrency_is_a_floor_even_when_idle() -> None:
    spec = block(provisionedConcurrency=15, concurrencyPerReplica=10, maxConcurrency=40)
    assert serverless_replicas(spec, 0, Demand(), ScalerMemory(), NOW, NOW) == 2
    assert serverless_replicas(spec, 4, Demand(), ScalerMemory(), NOW, NOW) == 2


def test_never_requested_stays_at_zero() -> None:
    assert serverless_replicas(block(), 0, Demand(), ScalerMemory(), NOW, NOW) == 0


def test_a_model_that_cannot_load_keeps_one_replica_trying_it_while_idle() -> None:
    """Failed, the endpoint's requests are refused, so no demand comes: at zero it would say
    InService (ScaledToZero) with a model that cannot load, and nothing would try a mended one.
    One replica stays, idle or not, and is not held above the demand's otherwise."""
    spec = s.EndpointSpec.model_validate(
        {"mode": "serverless", "model": {"uri": "file:///m"},
         "serverless": {"idleTimeoutSeconds": 10, "concurrencyPerReplica": 2}}
    )  # fmt: skip
    idle = Demand(last_request_at=NOW - 600)
    assert serverless_replicas(spec.serverless_block(), 1, idle, ScalerMemory(), NOW, NOW) == 0
    assert serverless_replicas(spec.serverless_block(), 1, idle, ScalerMemory(), NOW, NOW,
                               load_failed=True) == 1  # fmt: skip
    assert serverless_replicas(spec.serverless_block(), 0, idle, ScalerMemory(), NOW, NOW,
                               load_failed=True) == 1  # fmt: skip
    # the operator reads the failure from the pods: a model load's exit, not yet ready
    # (of a template that loaded before: a new one keeps a replica anyway until it loads)
    failing = PodState("p", "127.0.5.3", False, restarts=2, exit_code=3, message="no such file")
    for pods, wanted in (([failing], 1), ([PodState("p", "127.0.5.3", True)], 0), ([], 0)):
        workload = WorkloadState(True, 1, sum(p.ready for p in pods), 1, True, pods)
        signals = replace(loaded(spec, workload), demand=idle)
        assert serverless.replicas(spec, signals, ScalerMemory()) == wanted, pods


def test_every_serverless_field_reaches_the_objects() -> None:
    spec = s.EndpointSpec.model_validate(FULL_SPEC)
    check_golden("serverless-full.yaml", serverless.desired_objects(REF, spec, 2, "default:img"))


def test_status_is_in_service_at_zero_and_while_scaling() -> None:
    """Once its template loaded its model (``loaded``)."""
    spec = s.EndpointSpec.model_validate(FULL_SPEC)
    zero = serverless.observe(spec, loaded(spec, WorkloadState(True, 0, 0, 0, True)), None)
    assert zero.reason == "ScaledToZero"
    scaling = serverless.observe(spec, loaded(spec, WorkloadState(True, 1, 0, 0, True)), None)
    assert (scaling.phase, scaling.reason) == (s.Phase.IN_SERVICE, "Scaling")
    ready = serverless.observe(spec, loaded(spec, WorkloadState(True, 2, 2, 2, True)), None)
    assert (ready.phase, ready.ready_replicas) == (s.Phase.IN_SERVICE, 2)
    cold = WorkloadState(True, 1, 0, 0, True, [PodState("p", None, False, unschedulable="no")])
    stalled = serverless.observe(spec, loaded(spec, cold), None)
    assert (stalled.phase, stalled.reason) == (s.Phase.IN_SERVICE, "Unschedulable")
    assert stalled.message == "0/1 replicas ready; pod p cannot be scheduled: no"


def test_an_update_while_a_replica_starts_is_updating_until_it_rolled_out() -> None:
    """An UpdateEndpoint while a cold start's replica was not ready yet: the new spec's status,
    the Deployment not rolled out with none ready, was InService (Scaling), so the waiter
    passed; a moment later the old replica was ready and it turned Updating (RollingOut), and
    the next UpdateEndpoint was refused as in progress. A first start stays InService."""
    spec = s.EndpointSpec.model_validate(FULL_SPEC)
    starting = WorkloadState(True, 1, 0, 0, False)
    for previous in (s.Phase.IN_SERVICE, s.Phase.UPDATING):
        status = serverless.observe(spec, loaded(spec, starting), Status(previous))
        assert (status.phase, status.reason) == (s.Phase.UPDATING, "RollingOut"), previous
        # a template not loaded yet (a new model): Updating while it loads
        new = serverless.observe(spec, with_template(spec, starting), Status(previous))
        assert (new.phase, new.reason) == (s.Phase.UPDATING, "LoadingModel"), previous
    first = serverless.observe(spec, loaded(spec, starting), None)
    assert (first.phase, first.reason) == (s.Phase.IN_SERVICE, "Scaling")
    creating = serverless.observe(spec, loaded(spec, starting), Status(s.Phase.CREATING))
    assert creating.phase is s.Phase.IN_SERVICE
    done = serverless.observe(spec, loaded(spec, WorkloadState(True, 1, 1, 1, True)),
                              Status(s.Phase.UPDATING))  # fmt: skip
    assert (done.phase, done.reason) == (s.Phase.IN_SERVICE, "AllReplicasReady")


def test_reconcile_scales_from_zero_on_a_held_request_and_tells_how_long_it_took() -> None:
    spec = {"mode": "serverless", "model": {"uri": "file:///m"}, "serverless": {}}
    zero = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 0},
        "status": {"observedGeneration": 1},
    }
    kube = FakeKube(zero)
    d, _ = deps(kube)
    d.wall_clock = lambda: NOW
    memory = ScalerMemory()
    endpoint = {
        "metadata": {
            "name": "abalone",
            "namespace": "models",
            "uid": "uid-1",
            "generation": 1,
            "annotations": dict([entry("gw", held=1, last=NOW)]),
        },
        "spec": spec,
        "status": None,
    }
    result = reconcile(endpoint, memory, d)
    assert kube.applied[0]["spec"]["replicas"] == 1
    assert result.events == []
    kube.deployment = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1,
                   "updatedReplicas": 1},
    }  # fmt: skip
    d.wall_clock = lambda: NOW + 0.75
    result = reconcile(endpoint, memory, d)
    assert result.status.phase is s.Phase.IN_SERVICE
    assert result.events == [("ScaledFromZero", "a replica was ready 0.75 s after activation")]


def test_an_update_whose_model_cannot_load_leaves_the_warm_replica_serving() -> None:
    """A spec change (UpdateEndpoint, kubectl apply) whose model cannot load while a replica of
    the previous spec serves: Updating with the reason, as a realtime endpoint, not Failed
    (which the gateway refuses: every request would get a 400 while the old replica could
    answer it)."""
    spec = s.EndpointSpec.model_validate(FULL_SPEC)
    old = PodState("old", "127.0.5.1", True)
    new = PodState("new", "127.0.5.2", False, restarts=1, exit_code=3, message="no such object")
    rolling = WorkloadState(True, 1, 1, 0, False, [old, new])
    for previous in (s.Phase.IN_SERVICE, s.Phase.UPDATING):
        status = serverless.observe(spec, observed(rolling), Status(previous))
        assert (status.phase, status.reason) == (s.Phase.UPDATING, "ModelLoadFailed")
        assert "1 replica(s) of the previous spec still serve" in status.message
    # nothing of the previous spec left to serve: Failed, as before
    alone = WorkloadState(True, 1, 0, 0, False, [new])
    failed = serverless.observe(spec, observed(alone), Status(s.Phase.IN_SERVICE))
    assert (failed.phase, failed.reason) == (s.Phase.FAILED, "ModelLoadFailed")


def applied_replicas(kube: FakeKube) -> int:
    return int([o for o in kube.applied if o["kind"] == "Deployment"][-1]["spec"]["replicas"])


def test_a_realtime_endpoint_turned_serverless_keeps_a_replica_until_it_is_idle() -> None:
    """No gateway reports demand for a realtime endpoint, so at its change to serverless no
    request was ever seen: idle, it seemed, and its replicas went to zero under traffic (the
    next requests waiting for a cold start). The idle timeout counts from the change."""
    from tests.unit.operator.test_realtime import body, deps

    live = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                   "updatedReplicas": 2},
    }  # fmt: skip
    kube = FakeKube(live)
    d, _ = deps(kube)
    d.wall_clock = lambda: NOW
    memory = ScalerMemory()
    realtime = {"mode": "realtime", "model": {"uri": "file:///m"},
                "realtime": {"minReplicas": 2, "maxReplicas": 2}}  # fmt: skip
    reconcile(body(realtime), memory, d)
    assert applied_replicas(kube) == 2
    turned = {"mode": "serverless", "model": {"uri": "file:///m"},
              "serverless": {"idleTimeoutSeconds": 60}}  # fmt: skip
    reconcile(body(turned), memory, d)
    assert applied_replicas(kube) == 1
    # its new template's replica is ready; the requests since the change were reported
    applied = [o for o in kube.applied if o["kind"] == "Deployment"][-1]
    kube.deployment = {**live, "metadata": {**live["metadata"], **applied["metadata"]},
                       "spec": {"replicas": 1}}  # fmt: skip
    asked = body(turned)
    asked["metadata"]["annotations"] = dict([entry("gw", last=NOW + 1, at=NOW + 1)])
    d.wall_clock = lambda: NOW + 2
    d.clock = lambda: NOW + 2
    reconcile(asked, memory, d, autoscale=True)
    assert applied_replicas(kube) == 1  # asked for since the load began: kept while not idle
    later = NOW + 1 + 60 + SERVERLESS_SCALE_IN_DELAY_SECONDS
    d.wall_clock = lambda: later
    d.clock = lambda: later
    asked["metadata"]["annotations"] = dict([entry("gw", last=NOW + 1, at=later)])
    reconcile(asked, memory, d, autoscale=True)
    assert applied_replicas(kube) == 0  # idle since the last request: to zero


def test_a_replica_killed_for_its_memory_while_loading_says_so() -> None:
    """A model larger than ``memorySizeInMB`` gets the replica OOMKilled as it loads, again at
    each restart. With ``FallbackToLogsOnError`` the kubelet's termination message is the end
    of its log, which says nothing of memory: the status said only that the pod keeps crashing,
    quoting log lines, and dropped the kubelet's ``OOMKilled``, the one word naming the cause."""
    killed = {
        "terminated": {
            "exitCode": 137,
            "reason": "OOMKilled",
            "message": "INFO loading model s3://models/big/model.tar.gz",
        }
    }
    crashing = PodState.from_pod({
        "metadata": {"name": "ie-big-1"},
        "status": {"phase": "Running", "podIP": "127.0.3.5", "containerStatuses": [{
            "restartCount": 3, "lastState": killed,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]},
    })  # fmt: skip
    workload = WorkloadState(True, 1, 0, 1, True, [crashing])
    status = serverless.observe(s.EndpointSpec.model_validate(FULL_SPEC), observed(workload), None)
    assert (status.phase, status.reason) == (s.Phase.FAILED, "ContainerCrashing")
    assert status.message.startswith("pod ie-big-1 keeps crashing: OOMKilled (exit code 137)")
    assert "loading model s3://models/big/model.tar.gz" in status.message


def test_an_update_the_operator_cannot_parse_keeps_the_spec_it_had_waking_from_zero() -> None:
    """A spec an older CRD took and the operator cannot parse: the spec its replicas run kept
    serving, but nothing actuated it any more (a request held at zero waited out its timeout,
    no replica came). The spec the workload was last applied from, recorded in the status,
    now keeps being actuated as a refused update's spec is: a held request starts a replica;
    its async twin's queue stays watched (``in_force``)."""
    from infermodes.operator.reconcile import in_force
    from tests.unit.operator.test_realtime import body

    spec = {"mode": "serverless", "model": {"uri": "file:///m"}, "serverless": {}}
    made = FakeKube()
    first = reconcile(body(spec), ScalerMemory(), deps(made)[0]).status
    applied = next(o for o in made.applied if o["kind"] == "Deployment")
    zero = {**applied, "metadata": {**applied["metadata"], "generation": 1},
            "spec": {"replicas": 0}, "status": {"observedGeneration": 1}}  # fmt: skip
    kube = FakeKube(zero)
    d, _ = deps(kube)
    d.wall_clock = lambda: NOW
    serving = {**first.to_patch(1, None), "phase": "InService", "reason": "ScaledToZero"}
    unparsable = {**spec, "image": "registry.example/x:1\u00a0"}
    updated = body(unparsable, serving)
    updated["metadata"].update(generation=2, annotations=dict([entry("gw", held=1, last=NOW)]))
    kept = reconcile(updated, ScalerMemory(), d).status
    assert (kept.phase, kept.reason) == (s.Phase.UPDATING, "InvalidSpec")
    assert kept.message.startswith("spec.image: ")
    assert kube.scaled == [1] and kube.applied == []  # woken, nothing of the new spec applied
    assert kept.applied is None  # the record stays the spec it had (a patch leaves it)
    pool_block = {"outputPath": "s3://b/out/", "brokerSecretRef": {"name": "rabbit"}}
    async_spec = {"mode": "async", "model": {"uri": "file:///m"}, "async": pool_block}
    pool = reconcile(body(async_spec), ScalerMemory(), deps(FakeKube())[0]).status
    watched, why, runs = in_force({**async_spec, "image": "x\u00a0"}, pool.to_patch(1, None))
    assert watched is not None and watched.async_ is not None and runs == 1
    assert why is not None and why.startswith("spec.image: ")


def test_a_new_template_wants_one_replica_to_load_its_model_then_goes_to_zero_at_once() -> None:
    """r62 D2: a serverless endpoint at zero never loaded its model, so the endpoint_in_service
    waiter passed on a model that cannot load. Its template wants one replica, whatever the
    demand, until one was ready; the endpoint is Creating (LoadingModel) meanwhile; then, no
    request having asked for it, that replica goes at once, not after idleTimeoutSeconds."""
    spec = serverless_spec(idleTimeoutSeconds=600)
    memory = ScalerMemory()
    never = Demand()
    assert serverless_replicas(spec.serverless_block(), 0, never, memory, NOW, NOW,
                               loaded=False) == 1  # fmt: skip
    assert serverless_replicas(spec.serverless_block(), 1, never, memory, NOW + 5, NOW + 5,
                               loaded=False) == 1  # fmt: skip
    assert serverless_replicas(spec.serverless_block(), 1, never, memory, NOW + 6, NOW + 6) == 0
    assert serverless_replicas(spec.serverless_block(), 0, never, memory, NOW + 7, NOW + 7) == 0
    # a request while it loaded asked for it: it stays for the idle timeout from that request
    asked = ScalerMemory()
    serverless_replicas(spec.serverless_block(), 0, never, asked, NOW, NOW, loaded=False)
    request = Demand(last_request_at=NOW + 3)
    assert serverless_replicas(spec.serverless_block(), 1, request, asked, NOW + 6, NOW + 6) == 1
    # the operator: Creating until a replica of the template is ready, then InService
    starting = WorkloadState(True, 1, 0, 0, True)
    status = serverless.observe(spec, with_template(spec, starting), None)
    assert (status.phase, status.reason) == (s.Phase.CREATING, "LoadingModel")
    assert status.message == (
        "one replica loads the model before the endpoint takes requests (0/1 replicas ready)"
    )
    assert status.loaded_template is None
    assert serverless.replicas(spec, with_template(spec, WorkloadState(True)), ScalerMemory()) == 1
    ready = serverless.observe(spec, with_template(spec, WorkloadState(True, 1, 1, 1, True)), None)
    assert (ready.phase, ready.reason) == (s.Phase.IN_SERVICE, "AllReplicasReady")
    assert ready.loaded_template == replica_template(spec)
    assert ready.to_patch(1, None)["loadedTemplate"] == replica_template(spec)


def test_only_what_a_replica_serves_makes_a_new_template() -> None:
    """A change of scaling knobs runs the same replicas: no new load; a new model, image,
    output setting, memory size or Secret to read the model with is a new replica, which loads
    its model again (a Secret of wrong credentials otherwise left it InService)."""
    base = {"mode": "serverless", "model": {"uri": "file:///m"}, "serverless": {}}
    same = replica_template(s.EndpointSpec.model_validate(base))
    scaling = {"maxConcurrency": 7, "idleTimeoutSeconds": 30, "provisionedConcurrency": 2,
               "concurrencyPerReplica": 2}  # fmt: skip
    knobs = s.EndpointSpec.model_validate({**base, "serverless": scaling})
    assert replica_template(knobs) == same
    for change in ({"model": {"uri": "file:///other"}}, {"image": "registry.example/x:2"},
                   {"model": {"uri": "file:///m", "inferenceOutput": "predicted_label"}},
                   {"serverless": {"memorySizeInMB": 4096}},
                   {"storageSecretRef": {"name": "other-credentials"}}):  # fmt: skip
        assert replica_template(s.EndpointSpec.model_validate({**base, **change})) != same, change


def test_a_changed_template_of_an_endpoint_that_served_is_updating_until_it_loads() -> None:
    """UpdateEndpoint (or kubectl apply) of a new model to an endpoint at zero: Updating while
    one replica loads it, as the platform's UpdateEndpoint; its demand wants that replica; the
    status still remembers the old template, which is not this one."""
    spec = serverless_spec()
    old = replica_template(serverless_spec(memorySizeInMB=4096))
    stale = {"metadata": {"annotations": {serverless.REPLICA_TEMPLATE: old}}}
    zero = replace(observed(WorkloadState(True, 0, 0, 0, True)), workload_object=stale,
                   loaded_template=old, now=NOW, wall=NOW)  # fmt: skip
    assert serverless.replicas(spec, zero, ScalerMemory()) == 1
    status = serverless.observe(spec, zero, Status(s.Phase.IN_SERVICE, "ScaledToZero"))
    assert (status.phase, status.reason) == (s.Phase.UPDATING, "LoadingModel")
    assert status.loaded_template == old


def test_a_template_that_loaded_once_stays_loaded_across_a_restart_and_a_scale_to_zero() -> None:
    """The status remembers the loaded template: an operator started again (a memory just
    made) does not load it again for nothing, and the endpoint at zero is InService."""
    spec = serverless_spec()
    zero = replace(with_template(spec, WorkloadState(True, 0, 0, 0, True)),
                   loaded_template=replica_template(spec))  # fmt: skip
    assert serverless.replicas(spec, zero, ScalerMemory()) == 0
    status = serverless.observe(spec, zero, None)
    assert (status.phase, status.reason) == (s.Phase.IN_SERVICE, "ScaledToZero")
    assert status.loaded_template == replica_template(spec)
    # not remembered: this operator loads it once
    assert serverless.replicas(spec, replace(zero, loaded_template=None), ScalerMemory()) == 1


def test_a_template_whose_model_cannot_load_is_failed_and_forgets_any_load() -> None:
    """The first load fails: Failed with the load's reason (not InService at zero), one replica
    keeps trying; the status's remembered template is cleared."""
    spec = serverless_spec()
    failing = PodState("p", "127.0.5.3", False, restarts=1, exit_code=3,
                       message="cannot load model: no such file")  # fmt: skip
    signals = with_template(spec, WorkloadState(True, 1, 0, 1, True, [failing]))
    status = serverless.observe(spec, signals, Status(s.Phase.CREATING))
    assert (status.phase, status.reason) == (s.Phase.FAILED, "ModelLoadFailed")
    assert status.message == "model cannot be loaded: no such file"
    assert serverless.replicas(spec, signals, ScalerMemory()) == 1
    assert status.to_patch(1, {"loadedTemplate": "older"})["loadedTemplate"] is None
    assert "loadedTemplate" not in status.to_patch(1, None)


def test_both_actuators_say_a_serverless_phase_by_one_rule() -> None:
    """``serverless_phase`` at its edges: loading (first time, after serving), at zero, rolling
    out over replicas of an endpoint that served, scaling."""
    assert serverless_phase(False, False, 1, 0, False)[:2] == (s.Phase.CREATING, "LoadingModel")
    assert serverless_phase(False, True, 0, 0, True)[:2] == (s.Phase.UPDATING, "LoadingModel")
    assert serverless_phase(True, True, 0, 0, False)[:2] == (s.Phase.IN_SERVICE, "ScaledToZero")
    assert serverless_phase(True, True, 2, 1, True)[:2] == (s.Phase.UPDATING, "RollingOut")
    assert serverless_phase(True, False, 1, 0, True)[:2] == (s.Phase.IN_SERVICE, "Scaling")
    assert serverless_phase(True, False, 2, 2, False) == (
        s.Phase.IN_SERVICE, "AllReplicasReady", "2/2 replicas ready"
    )  # fmt: skip


def test_a_status_read_back_older_than_the_operators_write_does_not_load_again() -> None:
    """A reconcile whose body's status predates the operator's own write that remembered the
    loaded template (a resync's cached body) took it as not loaded once its replica was gone:
    one replica again, and Creating (LoadingModel) after the endpoint had said InService at
    zero, which the gateway refused requests for (the operator scenarios). The operator's
    memory remembers it too."""
    from tests.unit.operator.test_realtime import body

    spec = {"mode": "serverless", "model": {"uri": "file:///m"}, "serverless": {}}
    kube = FakeKube()
    d, _ = deps(kube)
    d.wall_clock = lambda: NOW
    memory = ScalerMemory()
    reconcile(body(spec), memory, d)
    assert applied_replicas(kube) == 1  # it loads the model
    applied = [o for o in kube.applied if o["kind"] == "Deployment"][-1]
    metadata = {**applied["metadata"], "generation": 1}
    counts = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    kube.deployment = {**applied, "metadata": metadata, "status": counts}
    ready = reconcile(body(spec), memory, d).status
    assert (ready.phase, ready.loaded_template) == (
        s.Phase.IN_SERVICE,
        replica_template(s.EndpointSpec.model_validate(spec)),
    )
    assert applied_replicas(kube) == 0  # asked for by no request: gone at once
    kube.deployment = {**applied, "metadata": metadata, "spec": {"replicas": 0},
                       "status": {"observedGeneration": 1}}  # fmt: skip
    stale = reconcile(body(spec), memory, d).status  # its status still without loadedTemplate
    assert applied_replicas(kube) == 0
    assert (stale.phase, stale.reason) == (s.Phase.IN_SERVICE, "ScaledToZero")


def test_each_decision_digests_the_spec_s_template_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``replica_template`` hashes the spec's whole process plan: ``replicas`` and ``observe``
    each took it twice (once in ``template_loaded``, once to compare with it)."""
    spec = serverless_spec()
    signals = with_template(spec, WorkloadState(True, 1, 1, 1, True))
    digests: list[str] = []

    def counted(spec: s.EndpointSpec) -> str:
        digests.append(replica_template(spec))
        return digests[-1]

    monkeypatch.setattr(serverless, "replica_template", counted)
    assert serverless.replicas(spec, signals, ScalerMemory()) == 0  # loaded, and no demand
    assert len(digests) == 1
    status = serverless.observe(spec, signals, None)
    assert (status.phase, len(digests)) == (s.Phase.IN_SERVICE, 2)
