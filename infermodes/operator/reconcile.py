"""One reconcile for create, update, resume and the timer: spec -> objects -> status.

Pure decisions live in the mode modules and ``endpoints.scaling``; this function gathers the
observed state through ``KubeDoor`` (and the pods' own metrics through ``Deps.scrape`` and
``Deps.fetch_metrics``, every pod of one reading at once), asks the mode, applies the result
and returns the status.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from infermodes.endpoints import spec as s
from infermodes.endpoints.demand import Demand
from infermodes.endpoints.plan import SERVER_PORT
from infermodes.endpoints.scaling import ScalerMemory
from infermodes.endpoints.status import (
    APPLY_REFUSED,
    INVALID_SPEC,
    AppliedSpec,
    BatchOutput,
    QueueFigures,
    Status,
    in_force,
    made_by_api,
    output_held_by,
    parse_rfc3339,
    rfc3339,
    served,
)
from infermodes.errors import shown
from infermodes.metrics import ServerLoad, fetch_metrics_text, read_all
from infermodes.operator.kube import ApplyRefused, KubeDoor, KubeError
from infermodes.operator.modes import mode_for
from infermodes.operator.modes.base import Signals
from infermodes.operator.objects import POLICY, SPEC_GENERATION, EndpointRef, Ingress
from infermodes.operator.observed import TEMPLATE_GENERATION, WorkloadState
from infermodes.operator.signals.names import Holder, holder_elsewhere
from infermodes.settings import OperatorSettings, image_allowed, name_allowed

log = logging.getLogger("infermodes.operator")


@dataclass
class Deps:
    kube: KubeDoor
    settings: OperatorSettings
    scrape: Callable[[str, int], ServerLoad | None]
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    fetch_metrics: Callable[[str, int], str | None] = fetch_metrics_text
    # an async endpoint's queue, and (True) its outbox's waiting jobs
    read_backlog: Callable[[str, bool], QueueFigures | None] = lambda _endpoint, _hooks: None
    # the async endpoints of a name in every namespace, for the one asking (its namespace and
    # name; None: they cannot be listed)
    async_holders: Callable[[str, str], list[Holder] | None] = lambda _namespace, _name: []
    # every batch endpoint's hold on its output prefix, for the one asking (None: they cannot
    # be listed)
    batch_outputs: Callable[[str, str], list[BatchOutput] | None] = lambda _ns, _name: []
    # who may connect to endpoint pods (None: no NetworkPolicies), from ``settings`` once
    ingress: Ingress | None = field(init=False)

    def __post_init__(self) -> None:
        self.ingress = Ingress.from_settings(self.settings)


@dataclass(frozen=True)
class Reconciled:
    """The status to write, and Events worth telling beyond a phase change."""

    status: Status
    events: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)


def observe_workload(
    kind: str, workload: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> WorkloadState:
    """A Deployment's view of replicas and pods; for other kinds only whether it exists."""
    if kind == "Deployment" or workload is None:
        return WorkloadState.from_objects(workload, pods)
    return WorkloadState(exists=True)


NAME_CONFLICT = "NameConflict"


def owned(obj: dict[str, Any], ref: EndpointRef) -> bool:
    """Whether ``obj`` is this endpoint's (its owner reference, which every object the
    operator makes carries)."""
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("kind") == s.KIND and o.get("name") == ref.name for o in owners)


def foreign_object(
    deps: Deps, ref: EndpointRef, objects: list[dict[str, Any]], workload: dict[str, Any] | None
) -> str | None:
    """The first object of the names this endpoint's would have that someone else owns: a
    forced apply would take it over, and the endpoint's deletion would delete it with it."""
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        live = (
            workload
            if kind in ("Deployment", "Job")
            else deps.kube.get(obj["apiVersion"], kind, ref.namespace, name)
        )
        if live is not None and not owned(live, ref):
            return f"{kind} {name}"
    return None


REFUSAL_SHOWN = 1000


def api_refusal(refusal: str) -> str:
    """The message of an object the API server refused (``ApplyRefused``)."""
    if len(refusal) > REFUSAL_SHOWN:  # an invalid object's error can run to kilobytes
        refusal = refusal[:REFUSAL_SHOWN] + "..."
    return (f"the API server refused {refusal}; applied again at every resync: fix the "
            "spec, or what refuses it (a quota, an admission policy)")  # fmt: skip


def refused_status(live: Status, previous: Status | None, reason: str, message: str) -> Status:
    """The spec was not applied (the API server refused an object, or the operator the spec):
    ``Failed`` with ``reason``, with the live workload's counts; ``Updating`` when an endpoint
    that served still serves on the spec it had (as an update that cannot roll out; it still
    scales); a running batch job stays ``InProgress``. Every resync tries again, so it mends
    once the cause is gone."""
    if served(previous) and live.phase in (s.Phase.IN_SERVICE, s.Phase.UPDATING):
        serving = f"{message}; the spec it had still serves: {live.message}"
        return replace(live, phase=s.Phase.UPDATING, reason=reason, message=serving)
    if live.phase is s.Phase.IN_PROGRESS:
        return replace(live, reason=reason, message=f"{message}; {live.message}")
    return replace(live, phase=s.Phase.FAILED, reason=reason, message=message)


def not_allowed(spec: s.EndpointSpec, settings: OperatorSettings) -> str | None:
    """Why the operator does not run this spec (an image, a Secret or a pickle its settings
    do not allow), or None."""
    if spec.image and not image_allowed(spec.image, settings.image, settings.allowed_images):
        return (
            f"spec.image {shown(spec.image)} is not an image this operator runs: the "
            "operator's own, or one its operator.allowedImages lists (ask whoever runs it)"
        )
    for named, name in spec.secret_refs().items():
        if not name_allowed(name, settings.allowed_secret_names):
            return (
                f"{named} {shown(name)} is not a Secret this operator gives endpoints: name "
                "one its operator.allowedSecretNames lists (by default infermodes-...; ask "
                "whoever runs it)"
            )
    if spec.model.allow_pickle and not settings.allow_pickle:
        return (
            "spec.model.allowPickle: this operator does not let endpoints unpickle models "
            "(unpickling runs the artifact's code; operator.allowPickle, ask whoever runs it): "
            "re-save the model with Booster.save_model (JSON or UBJ); a pickled Booster loads "
            "without it"
        )
    return None


def applied_earlier(
    workload: dict[str, Any] | None, ref: EndpointRef, runs: int | None = None
) -> bool:
    """Whether the live workload runs an earlier generation of the spec (``SPEC_GENERATION``),
    ``runs`` when given: a spec refused now is then an update, not what its pods run."""
    annotations = ((workload or {}).get("metadata") or {}).get("annotations") or {}
    noted = str(annotations.get(SPEC_GENERATION, ""))
    earlier = noted.isdigit() and int(noted) < ref.generation
    return earlier and (runs is None or int(noted) == runs)


def scaled(deps: Deps, ref: EndpointRef, live: dict[str, Any], replicas: int) -> dict[str, Any]:
    """The live Deployment at ``replicas`` (patched when it is not): while its new spec is
    refused, the previous one still scales, from zero too (a held request starts a replica)."""
    if int((live.get("spec") or {}).get("replicas", 1)) == replicas:
        return live
    return deps.kube.patch_spec(
        "apps/v1", "Deployment", ref.namespace, ref.child_name, {"replicas": replicas}
    )


def suspended(
    deps: Deps, ref: EndpointRef, live: dict[str, Any], desired: dict[str, Any]
) -> dict[str, Any]:
    """The live Job with the desired ``suspend`` (patched when it differs), never applied
    again whole: the rest of a Job is immutable once created, so a template the operator now
    makes differently (an upgrade that adds a variable) was refused at every reconcile, and
    the stop it carried with it. A patch the API server refuses (``ApplyRefused``) is the
    status's to say, as a refused apply is."""
    wanted = bool(desired["spec"]["suspend"])
    if bool((live.get("spec") or {}).get("suspend")) == wanted:
        return live
    return deps.kube.patch_spec(
        "batch/v1", "Job", ref.namespace, ref.child_name, {"suspend": wanted}
    )


def pod_template(deployment: dict[str, Any]) -> Any:
    return (deployment.get("spec") or {}).get("template")


def note_template(
    deps: Deps, ref: EndpointRef, found: dict[str, Any] | None, after: dict[str, Any]
) -> dict[str, Any]:
    """The Deployment as applied, with the generation of its pod template noted on it
    (``TEMPLATE_GENERATION``): this one when the apply changed the template (both as the API
    answers them, so compared as they are), the one noted before when it did not; on one
    noted by no operator yet, its generation before the apply (a change of unknown kind the
    controller may not have seen). One write, only when the value changes."""
    metadata = after.get("metadata") or {}
    noted = (metadata.get("annotations") or {}).get(TEMPLATE_GENERATION)
    if found is None or pod_template(found) != pod_template(after):
        value = str(metadata.get("generation", 1))
    elif noted is None:
        value = str((found.get("metadata") or {}).get("generation", 1))
    else:
        return after
    if value == noted:
        return after
    deps.kube.annotate("apps/v1", "Deployment", ref.namespace, ref.child_name,
                       {TEMPLATE_GENERATION: value})  # fmt: skip
    annotations = {**(metadata.get("annotations") or {}), TEMPLATE_GENERATION: value}
    return {**after, "metadata": {**metadata, "annotations": annotations}}


def remove_policy(deps: Deps, ref: EndpointRef) -> None:
    """With NetworkPolicies off, delete the one the endpoint got while they were on (its own:
    one of that name someone else made is theirs): left, it would fence the pods of a feature
    turned off. Only said when it fails: every resync tries again, and the endpoint serves
    meanwhile (a role without the chart's rule to read or delete them, say)."""
    api_version, kind = POLICY
    try:
        live = deps.kube.get(api_version, kind, ref.namespace, ref.child_name)
        if live is not None and owned(live, ref):
            uid = (live.get("metadata") or {}).get("uid")
            deps.kube.delete(api_version, kind, ref.namespace, ref.child_name, uid)
    except KubeError as exc:
        log.warning("cannot remove the NetworkPolicy %s/%s of networkPolicy.enabled=true "
                    "(now off): %s", ref.namespace, ref.child_name, exc)  # fmt: skip


def unparsed(deps: Deps, ref: EndpointRef, previous: Status | None, problems: str) -> Status:
    """The status of a spec the operator cannot parse (``problems``) with no applied spec of
    its workload's generation to actuate instead (one an older operator applied): an update
    of an endpoint that served, whose Deployment runs an earlier generation's spec, is refused
    as ``not_allowed`` refuses one: ``Updating``, the spec it had still serving; its replicas
    stay as they are (no spec to scale them by) until the spec is fixed or reverted. Anything
    else (a new endpoint, a batch job, whose spec never changes): ``Failed``."""
    live = deps.kube.get("apps/v1", "Deployment", ref.namespace, ref.child_name)
    if live is None or not (served(previous) and owned(live, ref) and applied_earlier(live, ref)):
        return Status(s.Phase.FAILED, INVALID_SPEC, problems)
    workload = WorkloadState.from_objects(live, [])
    serving = (f"{problems}; the spec it had still serves: {workload.ready}/{workload.replicas} "
               "replicas ready, not scaled until the spec is fixed or reverted")  # fmt: skip
    return workload.status(s.Phase.UPDATING, INVALID_SPEC, serving)


def workload_gone(message: str, kind: str) -> str:
    """An ended endpoint's message once its workload was deleted: it stays as it ended."""
    note = f"its {kind} was deleted and is not made again: delete and re-create the endpoint"
    return message if message.endswith(note) else f"{message}; {note}"


def reconcile(body: Any, memory: ScalerMemory, deps: Deps, autoscale: bool = False) -> Reconciled:
    """Bring the endpoint's objects to their desired state and say what state it is in."""
    ref = EndpointRef.from_body(body)
    reconciled = converge(ref, body, memory, deps, autoscale)
    # after the workload's apply (a scale from zero waits for none), and after every way out:
    # an endpoint Failed or refused keeps pods (an update's) the policy would fence
    if deps.ingress is None:
        remove_policy(deps, ref)
    return reconciled


def converge(
    ref: EndpointRef, body: Any, memory: ScalerMemory, deps: Deps, autoscale: bool
) -> Reconciled:
    """``reconcile`` but for the NetworkPolicy of networkPolicy.enabled=true, now off."""
    previous = Status.from_dict(body.get("status"))
    raw = body.get("spec") or {}
    spec, refused, runs = in_force(raw, body.get("status"))
    if spec is None:  # one it cannot parse, and none applied before to actuate instead
        return Reconciled(unparsed(deps, ref, previous, refused or ""))
    mode = mode_for(spec.mode)
    api_version, kind = mode.WORKLOAD
    found = deps.kube.get(api_version, kind, ref.namespace, ref.child_name)
    refused = refused or not_allowed(spec, deps.settings)
    if refused is not None and not applied_earlier(found, ref, runs):  # what its pods run
        if runs is not None:  # the applied spec is not what the workload runs
            return Reconciled(unparsed(deps, ref, previous, refused))
        return Reconciled(Status(s.Phase.FAILED, INVALID_SPEC, refused))
    pods = deps.kube.list("v1", "Pod", ref.namespace, ref.selector(mode.COMPONENT))
    workload = observe_workload(kind, found, pods)
    # every async endpoint's outbox: jobs of webhooks since removed from the spec wait there
    # too, and only a worker settles them (the look, each second, reads it of a pool at zero)
    webhooks = spec.async_ is not None

    @functools.cache  # read at most once per reconcile: the decision and the status agree
    def loads() -> dict[str, ServerLoad]:
        ready = {pod.name: pod.ip for pod in workload.pods if pod.ready and pod.ip}
        found = read_all(lambda ip: deps.scrape(ip, SERVER_PORT), ready.values())
        return {name: load for name, ip in ready.items() if (load := found.get(ip)) is not None}

    @functools.cache  # once per set of pods and reconcile, as the loads
    def fetch_metrics(ips: tuple[str, ...], port: int) -> dict[str, str | None]:
        return read_all(lambda ip: deps.fetch_metrics(ip, port), ips)

    wall = deps.wall_clock()
    metadata = body.get("metadata") or {}
    demand = Demand.from_annotations(metadata.get("annotations"), wall)

    @functools.cache
    def name_held_by() -> str | None:
        holders = deps.async_holders(ref.namespace, ref.name)
        created = str(metadata.get("creationTimestamp") or "")
        return None if holders is None else holder_elsewhere(ref.namespace, created, holders)

    @functools.cache
    def batch_output_held_by() -> str | None:
        outputs = deps.batch_outputs(ref.namespace, ref.name) if spec.batch is not None else None
        if spec.batch is None or outputs is None:
            return None
        created = str(metadata.get("creationTimestamp") or "")
        job = BatchOutput(f"{ref.namespace}/{ref.name}", created, spec.batch.output.uri, False)
        return output_held_by(job, outputs)

    @functools.cache
    def workload_events() -> list[dict[str, Any]]:
        """This workload's Events (its UID: not a namesake's that was deleted); none when they
        cannot be listed (a role without the chart's rule): the status then says less."""
        uid = str(((found or {}).get("metadata") or {}).get("uid") or "")
        fields = {"involvedObject.kind": kind, "involvedObject.name": ref.child_name}
        if uid:
            fields["involvedObject.uid"] = uid
        try:
            return deps.kube.list("v1", "Event", ref.namespace, {}, fields)
        except KubeError as exc:
            log.warning("cannot list the Events of %s %s/%s: %s", kind, ref.namespace,
                        ref.child_name, exc)  # fmt: skip
            return []

    signals = Signals(
        workload,
        found,
        pods,
        loads,
        fetch_metrics,
        functools.cache(lambda: deps.read_backlog(ref.name, webhooks)),
        demand,
        deps.clock(),
        wall,
        autoscale,
        name_held_by,
        workload_events,
        batch_output_held_by,
        made_by_api(metadata.get("labels") or {}),
        memory.loaded_template or (body.get("status") or {}).get("loadedTemplate"),
    )
    previous_scale = (body.get("status") or {}).get("lastScaleTime")
    memory.restore(parse_rfc3339(previous_scale), signals.now, wall)
    changed_at = memory.last_change_at
    replicas = mode.replicas(spec, signals, memory)
    for pod, wanted in mode.pod_annotations(spec, signals, replicas).items():
        deps.kube.annotate("v1", "Pod", ref.namespace, pod, wanted)
    if kind == "Deployment" and workload.exists and workload.replicas == 0 and replicas > 0:
        memory.activated_at = wall  # a pool at zero starting (a Job has no replicas to scale)
    objects = mode.desired_objects(ref, spec, replicas, deps.settings.image, deps.ingress)
    taken = foreign_object(deps, ref, objects, found)
    if taken is not None:
        return Reconciled(Status(s.Phase.FAILED, NAME_CONFLICT, (
            f"a {taken} already exists in namespace {ref.namespace} and is not this "
            "endpoint's (no owner reference to it): the operator leaves it alone; rename the "
            "endpoint, or delete that object if it is not needed")))  # fmt: skip
    ended = previous is not None and mode.ended(previous)
    if previous is not None and ended and found is None:
        return Reconciled(replace(previous, message=workload_gone(previous.message, kind)))
    applied: dict[str, dict[str, Any]] = {}
    # (reason, message) of a spec not applied: the operator's refusal (an update: the spec
    # the pods run still serves), or the API server's
    refusal = None if refused is None else (INVALID_SPEC, refused)
    if not ended and refusal is None:  # an ended job's Job stays as it is
        try:
            # the workload first once it exists: a scale (a cold start's) waits for no
            # other object's apply; at creation, the order given (a NetworkPolicy before
            # the pods it guards)
            ordered = objects if found is None else sorted(objects, key=lambda o: o["kind"] != kind)
            for obj in ordered:
                if obj["kind"] == "Job" and found is not None:
                    applied["Job"] = suspended(deps, ref, found, obj)
                else:
                    applied[obj["kind"]] = deps.kube.apply(obj)
        except ApplyRefused as exc:
            refusal = (APPLY_REFUSED, api_refusal(str(exc)))
    runs_spec = kind in applied  # the workload was applied from this spec
    if refusal is not None and kind == "Deployment" and found is not None and not runs_spec:
        applied = {kind: scaled(deps, ref, found, replicas)}  # the spec as it was still scales
    after = applied.get(kind, found)
    if kind == "Deployment" and after is not None:
        after = note_template(deps, ref, found, after)
    observed = replace(signals, workload=observe_workload(kind, after, pods), workload_object=after)
    last_scale = rfc3339(wall) if memory.last_change_at != changed_at else previous_scale
    recorded = AppliedSpec.of(ref.generation, raw) if runs_spec else None
    status = replace(mode.observe(spec, observed, previous), last_scale_time=last_scale,
                     applied=recorded)  # fmt: skip
    memory.loaded_template = status.loaded_template
    if refusal is not None and not mode.ended(status):
        status = refused_status(status, previous, *refusal)
    events = []
    if memory.activated_at is not None and status.ready_replicas > 0:
        seconds = wall - memory.activated_at
        events.append(("ScaledFromZero", f"a replica was ready {seconds:.2f} s after activation"))
        memory.activated_at = None
    return Reconciled(status, events)
