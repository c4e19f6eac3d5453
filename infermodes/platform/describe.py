"""InferenceEndpoint objects (with the status the actuator wrote) -> the platform's Describe and
List answers. Timestamps are epoch seconds, as the JSON 1.1 protocol carries them."""

from __future__ import annotations

import json
from datetime import datetime

from infermodes.endpoints.spec import Phase
from infermodes.endpoints.status import UPDATE_FAILURES, parse_rfc3339
from infermodes.platform.store import JsonObject
from infermodes.platform.translate import (
    ENDPOINT,
    KIND_LABEL,
    MODIFIED_ANNOTATION,
    NAME_ANNOTATION,
    REQUEST_ANNOTATION,
    TRANSFORM_JOB,
    UPDATED_ANNOTATION,
    Defaults,
    arn,
)

ENDPOINT_STATUS = {
    Phase.CREATING: "Creating",
    Phase.IN_SERVICE: "InService",
    Phase.UPDATING: "Updating",
    Phase.FAILED: "Failed",
    Phase.DELETING: "Deleting",
}
JOB_STATUS = {
    Phase.CREATING: "InProgress",
    Phase.IN_PROGRESS: "InProgress",
    Phase.COMPLETED: "Completed",
    Phase.FAILED: "Failed",
    Phase.STOPPED: "Stopped",
}


def kind_of(obj: JsonObject) -> str | None:
    """``Endpoint`` or ``TransformJob`` for objects this API made; None for the others."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    kind = labels.get(KIND_LABEL)
    return kind if kind in (ENDPOINT, TRANSFORM_JOB) else None


def given_name(obj: JsonObject) -> str:
    metadata = obj.get("metadata") or {}
    name: str = (metadata.get("annotations") or {}).get(NAME_ANNOTATION) or metadata["name"]
    return name


def request_of(obj: JsonObject) -> JsonObject:
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(REQUEST_ANNOTATION, "{}")
    found: JsonObject = json.loads(text)
    return found


def created(obj: JsonObject) -> float:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return modified(obj)
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


def modified(obj: JsonObject) -> float:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return float(annotations.get(MODIFIED_ANNOTATION, 0.0))


def last_modified(obj: JsonObject) -> float:
    """When the platform's object last changed: its creation, an update, or its status's
    last turn (InService, a job's end, a failed one's included), as the platform moves it on
    status changes too."""
    ended = parse_rfc3339((obj.get("status") or {}).get("endTime"))  # Ready stays False
    return max(modified(obj), created(obj), transition_time(obj) or 0.0, ended or 0.0)


def phase_of(obj: JsonObject) -> Phase | None:
    try:
        return Phase(str((obj.get("status") or {}).get("phase")))
    except ValueError:
        return None


def failure_reason(obj: JsonObject) -> str:
    status = obj.get("status") or {}
    return ": ".join(part for part in (status.get("reason"), status.get("message")) if part)


def status_predates_spec(obj: JsonObject) -> bool:
    """The status was written for a spec before the current one (an update not observed yet)."""
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return bool(generation and observed and observed < generation)


def update_failed(obj: JsonObject) -> bool:
    """An update of the current spec that cannot roll out (the spec before it serves): the
    status of an older spec says nothing of a newer one."""
    reason = (obj.get("status") or {}).get("reason")
    return (
        phase_of(obj) is Phase.UPDATING
        and reason in UPDATE_FAILURES
        and not status_predates_spec(obj)
    )


def being_deleted(obj: JsonObject) -> bool:
    """Deleted, and still held by a finalizer (the operator's, or another controller's)."""
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def endpoint_status(obj: JsonObject) -> str:
    """Creating until the actuator reports; Updating while an updated endpoint comes up (its
    new spec not observed yet, or its replicas starting again); Deleting once deleted, until
    it is gone, whatever its status said last."""
    if being_deleted(obj):
        return ENDPOINT_STATUS[Phase.DELETING]
    phase = phase_of(obj)
    if phase not in (None, Phase.FAILED) and status_predates_spec(obj):
        return "Updating"
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if phase in (None, Phase.CREATING) and UPDATED_ANNOTATION in annotations:
        return "Updating"
    return ENDPOINT_STATUS.get(phase or Phase.CREATING, "Creating")


def describe_endpoint(obj: JsonObject, defaults: Defaults) -> JsonObject:
    request, status = request_of(obj), obj.get("status") or {}
    name = given_name(obj)
    variant = request["ProductionVariants"][0]
    resolution = created(obj)
    weight = float(
        1.0 if variant.get("InitialVariantWeight") is None else variant["InitialVariantWeight"]
    )
    summary: JsonObject = {
        "VariantName": variant["VariantName"],
        "DeployedImages": [{
            "SpecifiedImage": request.get("Image") or defaults.resolved_image,
            "ResolvedImage": (obj.get("spec") or {}).get("image") or defaults.resolved_image,
            "ResolutionTime": resolution,
        }],
        "CurrentWeight": weight,
        "DesiredWeight": weight,
        "CurrentInstanceCount": int(status.get("readyReplicas", 0)),
        "DesiredInstanceCount": int(status.get("desiredReplicas", 0)),
    }  # fmt: skip
    if variant.get("ManagedInstanceScaling") is not None:  # as given, a summary's member too
        summary["ManagedInstanceScaling"] = variant["ManagedInstanceScaling"]
    if variant.get("ServerlessConfig") is not None:
        summary["CurrentServerlessConfig"] = variant["ServerlessConfig"]
        summary["DesiredServerlessConfig"] = variant["ServerlessConfig"]
    answer: JsonObject = {
        "EndpointName": name,
        "EndpointArn": arn(defaults, "endpoint", name),
        "EndpointConfigName": request["EndpointConfigName"],
        "ProductionVariants": [summary],
        "EndpointStatus": endpoint_status(obj),
        "CreationTime": created(obj),
        "LastModifiedTime": last_modified(obj),
    }
    if answer["EndpointStatus"] == "Failed" or update_failed(obj):
        answer["FailureReason"] = failure_reason(obj)[:1024]  # an update's: the old one serves
    if request.get("AsyncInferenceConfig"):
        answer["AsyncInferenceConfig"] = request["AsyncInferenceConfig"]
    return answer


def endpoint_summary(obj: JsonObject, defaults: Defaults) -> JsonObject:
    name = given_name(obj)
    return {
        "EndpointName": name,
        "EndpointArn": arn(defaults, "endpoint", name),
        "CreationTime": created(obj),
        "LastModifiedTime": last_modified(obj),
        "EndpointStatus": endpoint_status(obj),
    }


def job_status(obj: JsonObject) -> str:
    """``Stopping`` between StopTransformJob and the instances' end."""
    phase = phase_of(obj)
    stopping = bool(((obj.get("spec") or {}).get("batch") or {}).get("stop"))
    if phase in (None, Phase.CREATING, Phase.IN_PROGRESS) and stopping:
        return "Stopping"
    return JOB_STATUS.get(phase or Phase.IN_PROGRESS, "InProgress")


def describe_transform_job(obj: JsonObject, defaults: Defaults) -> JsonObject:
    request = request_of(obj)
    name = given_name(obj)
    state = job_status(obj)
    answer: JsonObject = {
        key: request[key]
        for key in ("ModelName", "MaxConcurrentTransforms", "ModelClientConfig", "MaxPayloadInMB",
                    "BatchStrategy", "Environment", "TransformInput", "TransformOutput",
                    "TransformResources", "DataProcessing")
        if key in request
    }  # fmt: skip
    answer |= {
        "TransformJobName": name,
        "TransformJobArn": arn(defaults, "transform-job", name),
        "TransformJobStatus": state,
        "CreationTime": created(obj),
        "TransformStartTime": created(obj),
    }
    if state in ("Completed", "Failed", "Stopped"):
        ended = parse_rfc3339((obj.get("status") or {}).get("endTime"))
        answer["TransformEndTime"] = ended or transition_time(obj) or created(obj)
    if state == "Failed":
        answer["FailureReason"] = failure_reason(obj)[:1024]
    return answer


def transition_time(obj: JsonObject) -> float | None:
    """When the Ready condition last changed (the job's end once it ended)."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        stamp = condition.get("lastTransitionTime")
        if condition.get("type") == "Ready" and stamp:
            return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    return None


def transform_job_summary(obj: JsonObject, defaults: Defaults) -> JsonObject:
    described = describe_transform_job(obj, defaults)
    keys = ("TransformJobName", "TransformJobArn", "CreationTime", "TransformEndTime",
            "TransformJobStatus", "FailureReason")  # fmt: skip
    summary: JsonObject = {k: described[k] for k in keys if k in described}
    summary["LastModifiedTime"] = last_modified(obj)
    return summary
