"""The control plane's operations: each takes the request's JSON and answers the platform's
output shape, or raises the platform's error. Names are case-insensitive as the platform's are:
records and objects are kept under the lower-cased name, answers carry the name as given."""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Awaitable, Callable

from infermodes.endpoints.spec import Mode, Phase, mode_change_allowed, object_name
from infermodes.errors import shown
from infermodes.platform.describe import (
    being_deleted,
    describe_endpoint,
    describe_transform_job,
    endpoint_summary,
    given_name,
    job_status,
    kind_of,
    transform_job_summary,
    update_failed,
)
from infermodes.platform.errors import (
    ResourceInUse,
    ResourceLimitExceeded,
    ValidationException,
)
from infermodes.platform.store import (
    AlreadyExists,
    JsonObject,
    NotFound,
    PlatformStore,
    RecordKind,
    ServedElsewhere,
)
from infermodes.platform.translate import (
    ENDPOINT,
    MODIFIED_ANNOTATION,
    TRANSFORM_JOB,
    UPDATED_ANNOTATION,
    Defaults,
    arn,
    check_name,
    check_tags,
    endpoint_config_record,
    endpoint_object,
    model_record,
    only,
    transform_object,
)

DEFAULT_MAX_RESULTS = 10
MAX_TOKEN_LENGTH = 1024  # a token names a list, its order and one item: far less
MAX_RESULTS = 100
MODEL_OUTPUT = ("ModelName", "PrimaryContainer", "Containers", "ExecutionRoleArn",
                "CreationTime", "ModelArn", "EnableNetworkIsolation")  # fmt: skip
CONFIG_OUTPUT = ("EndpointConfigName", "EndpointConfigArn", "ProductionVariants",
                 "CreationTime", "AsyncInferenceConfig", "ExecutionRoleArn",
                 "EnableNetworkIsolation")  # fmt: skip
LIST_FIELDS = {"SortBy", "SortOrder", "NextToken", "MaxResults", "NameContains",
               "CreationTimeBefore", "CreationTimeAfter", "LastModifiedTimeBefore",
               "LastModifiedTimeAfter", "StatusEquals"}  # fmt: skip
# What the platform calls each mode, in its errors.
PLATFORM_MODE = {
    Mode.REALTIME: "real-time",
    Mode.SERVERLESS: "serverless",
    Mode.ASYNC: "asynchronous",
    Mode.BATCH: "batch",
}
# the platform's enums (a filter by one we never report is valid and finds nothing)
STATUSES = {
    "EndpointStatus": ("OutOfService", "Creating", "Updating", "SystemUpdating", "RollingBack",
                       "InService", "Deleting", "Failed", "UpdateRollbackFailed"),
    "TransformJobStatus": ("InProgress", "Completed", "Failed", "Stopping", "Stopped"),
}  # fmt: skip
RESOURCE = {RecordKind.MODEL: "model", RecordKind.ENDPOINT_CONFIG: "endpoint-config"}
SPOKEN = {RecordKind.MODEL: "model", RecordKind.ENDPOINT_CONFIG: "endpoint configuration"}


def required(request: JsonObject, key: str) -> str:
    """A name the request must give, in the platform's pattern (never a path: the local store
    keeps records as files named by it)."""
    value = request.get(key)
    if value is None or value == "":
        raise ValidationException(f"{key} is required")
    if not isinstance(value, str):
        raise ValidationException(f"{key} must be a string, got {shown(value)}")
    return check_name(key, value)


def number(request: JsonObject, key: str) -> float | None:
    value = request.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationException(f"{key} must be a number (epoch seconds)")
    return float(value)


def page(request: JsonObject, items: list[JsonObject], list_key: str, name_key: str,
         status_key: str | None) -> JsonObject:  # fmt: skip
    """A List operation's answer: ``items`` filtered, sorted and cut to one page under
    ``list_key``; ``NextToken`` names the last item given (``next_token``)."""
    only("", request, LIST_FIELDS)
    contains = request.get("NameContains")
    if contains is not None:
        if not isinstance(contains, str):
            raise ValidationException(f"NameContains {shown(contains)} must be a string")
        items = [i for i in items if contains.lower() in i[name_key].lower()]
    for key, field, before in (("CreationTimeBefore", "CreationTime", True),
                               ("CreationTimeAfter", "CreationTime", False),
                               ("LastModifiedTimeBefore", "LastModifiedTime", True),
                               ("LastModifiedTimeAfter", "LastModifiedTime", False)):  # fmt: skip
        bound = number(request, key)
        if bound is not None and field == "LastModifiedTime" and status_key is None:
            # models and endpoint configs: no status, and never modified (the platform's too)
            raise ValidationException(f"{key} is not a filter of this list")
        if bound is not None:
            items = [i for i in items if field in i and (i[field] < bound) == before]
    if request.get("StatusEquals") is not None:
        if status_key is None:
            raise ValidationException("StatusEquals is not a filter of this list")
        if request["StatusEquals"] not in STATUSES[status_key]:
            raise ValidationException(
                f"StatusEquals {shown(request['StatusEquals'])}: one of "
                f"{', '.join(STATUSES[status_key])}"
            )
        items = [i for i in items if i[status_key] == request["StatusEquals"]]
    sort_by = request.get("SortBy", "CreationTime")
    sort_key = {"Name": name_key, "CreationTime": "CreationTime", "Status": status_key}.get(
        str(sort_by)
    )
    if sort_key is None:
        raise ValidationException(f"SortBy {shown(sort_by)} is not a sort key of this list")
    order = request.get("SortOrder", "Descending")
    if order not in ("Ascending", "Descending"):
        raise ValidationException(f"SortOrder {shown(order)}: Ascending or Descending")
    items.sort(key=lambda i: (i[sort_key], i[name_key]), reverse=order == "Descending")
    size = request.get("MaxResults", DEFAULT_MAX_RESULTS)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_RESULTS:
        raise ValidationException(f"MaxResults {shown(size)}: 1 to {MAX_RESULTS}")
    token = request.get("NextToken")
    if token is not None:
        last = after_token(token, (list_key, str(sort_by), order))
        items = [
            i for i in items
            if ((i[sort_key], i[name_key]) > last if order == "Ascending"
                else (i[sort_key], i[name_key]) < last)
        ]  # fmt: skip
    if not items[size:]:
        return {list_key: items}
    end = items[size - 1]
    return {
        list_key: items[:size],
        "NextToken": next_token((list_key, str(sort_by), order), end[sort_key], end[name_key]),
    }


ENDED_JOB_PHASES = frozenset({Phase.COMPLETED, Phase.FAILED, Phase.STOPPED})


def ended_job(obj: JsonObject) -> bool:
    """A transform job that ended (Completed, Failed or Stopped): it runs no pod."""
    phase = (obj.get("status") or {}).get("phase")
    mode = (obj.get("spec") or {}).get("mode")
    return mode == Mode.BATCH and phase in ENDED_JOB_PHASES


def next_token(listing: tuple[str, str, str], value: object, name: str) -> str:
    """Where the next page starts: after the last item given, by its sort key and name (so
    items deleted or created meanwhile move no other item to another page), for one list in
    one order."""
    raw = json.dumps([*listing, value, name], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def after_token(token: object, listing: tuple[str, str, str]) -> tuple[object, str]:
    """The (sort key, name) a ``next_token`` of this list and order names; a token this API
    did not give for them is a ValidationException."""
    refused = ValidationException(f"NextToken {shown(token)} is not one this API gave")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise refused
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, UnicodeError):  # binascii.Error and JSONDecodeError are ValueErrors
        raise refused from None
    if not isinstance(decoded, list) or len(decoded) != 5:
        raise refused
    *given, value, name = decoded
    if tuple(given) != listing:
        raise ValidationException(
            "NextToken was given for another list or order: send the same SortBy and SortOrder"
        )
    if not isinstance(name, str) or not isinstance(value, str | int | float):
        raise refused
    if isinstance(value, bool) or (given[1] == "CreationTime") == isinstance(value, str):
        raise refused  # compared with the items' own sort keys: of their type
    if isinstance(value, float) and not math.isfinite(value):
        raise refused  # 1e400, NaN: JSON's reader takes them, no item's time is one
    return value, name


class ControlPlane:
    """The seventeen operations over one store."""

    def __init__(self, store: PlatformStore, defaults: Defaults) -> None:
        self.store = store
        self.defaults = defaults

    def operations(self) -> dict[str, Callable[[JsonObject], Awaitable[JsonObject]]]:
        names = (
            "CreateModel", "DescribeModel", "ListModels", "DeleteModel", "CreateEndpointConfig",
            "DescribeEndpointConfig", "ListEndpointConfigs", "DeleteEndpointConfig",
            "CreateEndpoint", "DescribeEndpoint", "ListEndpoints", "UpdateEndpoint",
            "DeleteEndpoint", "CreateTransformJob", "DescribeTransformJob", "ListTransformJobs",
            "StopTransformJob",
        )  # fmt: skip
        return {name: getattr(self, name) for name in names}

    # records
    def _missing(self, kind: RecordKind, name: str) -> ValidationException:
        where = arn(self.defaults, RESOURCE[kind], name)
        return ValidationException(f'Could not find {SPOKEN[kind]} "{where}".')

    async def _record(self, kind: RecordKind, name: str) -> JsonObject:
        found = await self.store.read_record(kind, object_name(name))
        if found is None:
            raise self._missing(kind, name)
        return found

    async def _create_record(self, kind: RecordKind, name: str, record: JsonObject) -> None:
        if await self.store.count_records(kind) >= self.defaults.max_records:
            raise ResourceLimitExceeded(
                f"at most {self.defaults.max_records} {SPOKEN[kind]}s may exist at once; "
                "delete some first"
            )
        try:
            await self.store.create_record(kind, object_name(name), record)
        except AlreadyExists:
            where = arn(self.defaults, RESOURCE[kind], name)
            raise ValidationException(
                f'Cannot create already existing {SPOKEN[kind]} "{where}".'
            ) from None

    async def _delete_record(self, kind: RecordKind, name: str) -> JsonObject:
        try:
            await self.store.delete_record(kind, object_name(name))
        except NotFound:
            raise self._missing(kind, name) from None
        return {}

    async def _list_records(
        self, kind: RecordKind, request: JsonObject, name_key: str, arn_key: str, list_key: str
    ) -> JsonObject:
        records = await self.store.list_records(kind)
        items = [{name_key: r[name_key], arn_key: r[arn_key], "CreationTime": r["CreationTime"]}
                 for r in records]  # fmt: skip
        return page(request, items, list_key, name_key, None)

    async def CreateModel(self, request: JsonObject) -> JsonObject:
        record = model_record(request, self.defaults)
        await self._create_record(RecordKind.MODEL, record["ModelName"], record)
        return {"ModelArn": record["ModelArn"]}

    async def DescribeModel(self, request: JsonObject) -> JsonObject:
        record = await self._record(RecordKind.MODEL, required(request, "ModelName"))
        return {key: record[key] for key in MODEL_OUTPUT if key in record}

    async def ListModels(self, request: JsonObject) -> JsonObject:
        return await self._list_records(RecordKind.MODEL, request, "ModelName", "ModelArn",
                                        "Models")  # fmt: skip

    async def DeleteModel(self, request: JsonObject) -> JsonObject:
        return await self._delete_record(RecordKind.MODEL, required(request, "ModelName"))

    async def CreateEndpointConfig(self, request: JsonObject) -> JsonObject:
        variants = request.get("ProductionVariants")
        listed = variants if isinstance(variants, list) else []
        names = {str(v["ModelName"]) for v in listed
                 if isinstance(v, dict) and isinstance(v.get("ModelName"), str)}  # fmt: skip
        models = {n: await self.store.read_record(RecordKind.MODEL, object_name(n)) for n in names}
        record = endpoint_config_record(request, models, self.defaults)
        await self._create_record(RecordKind.ENDPOINT_CONFIG, record["EndpointConfigName"], record)
        return {"EndpointConfigArn": record["EndpointConfigArn"]}

    async def DescribeEndpointConfig(self, request: JsonObject) -> JsonObject:
        name = required(request, "EndpointConfigName")
        record = await self._record(RecordKind.ENDPOINT_CONFIG, name)
        return {key: record[key] for key in CONFIG_OUTPUT if key in record}

    async def ListEndpointConfigs(self, request: JsonObject) -> JsonObject:
        return await self._list_records(RecordKind.ENDPOINT_CONFIG, request,
                                        "EndpointConfigName", "EndpointConfigArn",
                                        "EndpointConfigs")  # fmt: skip

    async def DeleteEndpointConfig(self, request: JsonObject) -> JsonObject:
        name = required(request, "EndpointConfigName")
        return await self._delete_record(RecordKind.ENDPOINT_CONFIG, name)

    # endpoints and transform jobs: InferenceEndpoint objects
    async def _objects(self, kind: str) -> list[JsonObject]:
        return [o for o in await self.store.list_endpoints() if kind_of(o) == kind]

    async def _object(self, kind: str, name: str) -> JsonObject | None:
        found = await self.store.read_endpoint(object_name(name))
        return found if found is not None and kind_of(found) == kind else None

    async def _endpoint(self, name: str) -> JsonObject:
        found = await self._object(ENDPOINT, name)
        if found is None:
            where = arn(self.defaults, "endpoint", name)
            raise ValidationException(f'Could not find endpoint "{where}".')
        return found

    async def _job(self, name: str) -> JsonObject:
        found = await self._object(TRANSFORM_JOB, name)
        if found is None:
            # the platform's code (a ValidationException, though its model lists
            # ResourceNotFound), which boto3's transform_job_completed_or_stopped fails on
            raise ValidationException(f"Could not find requested job with name {name}")
        return found

    async def _new_object(self, obj: JsonObject, taken: Callable[[JsonObject], Exception]) -> None:
        """Create ``obj`` unless its name is taken (by either kind) or the cap is reached."""
        name = obj["metadata"]["name"]
        existing = await self.store.read_endpoint(name)
        if existing is not None:
            raise taken(existing)
        objects = await self.store.list_endpoints()
        # an ended transform job holds nothing and this API has no way to delete it (the
        # platform keeps them too): it counts only toward the larger cap on records
        running = [o for o in objects if not ended_job(o)]
        if len(running) >= self.defaults.max_endpoints:
            raise ResourceLimitExceeded(
                f"at most {self.defaults.max_endpoints} endpoints and running transform jobs "
                "may exist at once; delete some first"
            )
        if len(objects) >= self.defaults.max_records:
            raise ResourceLimitExceeded(
                f"at most {self.defaults.max_records} endpoints and transform jobs, ended ones "
                "included, may exist at once; delete ended jobs (kubectl delete ie NAME, or "
                "infermodes delete NAME)"
            )
        try:
            await self.store.create_endpoint(obj)
        except ServedElsewhere as exc:
            raise ResourceInUse(str(exc)) from None
        except AlreadyExists:
            raise taken(obj) from None

    async def _endpoint_object(self, name: str, config_name: str) -> JsonObject:
        config = await self._record(RecordKind.ENDPOINT_CONFIG, config_name)
        model_name = config["ProductionVariants"][0]["ModelName"]
        model = await self._record(RecordKind.MODEL, model_name)
        return endpoint_object(name, config, model, self.defaults)

    async def CreateEndpoint(self, request: JsonObject) -> JsonObject:
        only("", request, {"EndpointName", "EndpointConfigName", "Tags"})
        check_tags(request.get("Tags"))
        name = check_name("EndpointName", request.get("EndpointName"), kubernetes=True)
        obj = await self._endpoint_object(name, required(request, "EndpointConfigName"))

        def taken(existing: JsonObject) -> Exception:
            if kind_of(existing) == ENDPOINT:
                where = arn(self.defaults, "endpoint", name)
                return ValidationException(f'Cannot create already existing endpoint "{where}".')
            return ResourceInUse(
                f"the name {object_name(name)} is taken by another InferenceEndpoint (endpoints "
                "and transform jobs share names here)"
            )

        await self._new_object(obj, taken)
        return {"EndpointArn": arn(self.defaults, "endpoint", name)}

    async def DescribeEndpoint(self, request: JsonObject) -> JsonObject:
        obj = await self._endpoint(required(request, "EndpointName"))
        return describe_endpoint(obj, self.defaults)

    async def ListEndpoints(self, request: JsonObject) -> JsonObject:
        items = [endpoint_summary(o, self.defaults) for o in await self._objects(ENDPOINT)]
        return page(request, items, "Endpoints", "EndpointName", "EndpointStatus")

    async def UpdateEndpoint(self, request: JsonObject) -> JsonObject:
        only("", request, {"EndpointName", "EndpointConfigName", "RetainAllVariantProperties"})
        if request.get("RetainAllVariantProperties"):
            raise ValidationException("RetainAllVariantProperties is not supported by infermodes")
        name = required(request, "EndpointName")
        current = await self._endpoint(name)
        if being_deleted(current):  # a replace would succeed, on an object going away
            where = arn(self.defaults, "endpoint", name)
            raise ValidationException(f'Cannot update endpoint "{where}": it is being deleted.')
        status = describe_endpoint(current, self.defaults)["EndpointStatus"]
        if status in ("Creating", "Updating") and not update_failed(current):
            where = arn(self.defaults, "endpoint", name)
            raise ValidationException(f'Cannot update in-progress endpoint "{where}".')
        obj = await self._endpoint_object(
            given_name(current), required(request, "EndpointConfigName")
        )
        old, new = Mode(current["spec"]["mode"]), Mode(obj["spec"]["mode"])
        if not mode_change_allowed(old, new):
            where = arn(self.defaults, "endpoint", name)
            raise ValidationException(
                f'Cannot update endpoint "{where}" from {PLATFORM_MODE[old]} to '
                f"{PLATFORM_MODE[new]} inference: an endpoint changes in place only between "
                "real-time and serverless; delete it and create it again (an asynchronous "
                "endpoint's queue and requests are kept)"
            )
        obj["metadata"]["annotations"][UPDATED_ANNOTATION] = "true"
        try:
            await self.store.replace_endpoint(obj)
        except NotFound:
            await self._endpoint(name)  # gone meanwhile: the platform's error
        return {"EndpointArn": arn(self.defaults, "endpoint", name)}

    async def DeleteEndpoint(self, request: JsonObject) -> JsonObject:
        obj = await self._endpoint(required(request, "EndpointName"))
        try:
            await self.store.delete_endpoint(obj["metadata"]["name"])
        except NotFound:
            await self._endpoint(given_name(obj))
        return {}

    async def CreateTransformJob(self, request: JsonObject) -> JsonObject:
        model_name = required(request, "ModelName")
        model = await self.store.read_record(RecordKind.MODEL, object_name(model_name))
        obj = transform_object(request, model, self.defaults)
        name = given_name(obj)

        def taken(existing: JsonObject) -> Exception:
            where = arn(self.defaults, "transform-job", name)
            return ResourceInUse(
                f"Job name must be unique within an AWS account and region, and a job with this "
                f"name already exists ({where})"
                if kind_of(existing) == TRANSFORM_JOB
                else f"the name {object_name(name)} is taken by an endpoint (endpoints and "
                "transform jobs share names here)"
            )

        await self._new_object(obj, taken)
        return {"TransformJobArn": arn(self.defaults, "transform-job", name)}

    async def DescribeTransformJob(self, request: JsonObject) -> JsonObject:
        obj = await self._job(required(request, "TransformJobName"))
        return describe_transform_job(obj, self.defaults)

    async def ListTransformJobs(self, request: JsonObject) -> JsonObject:
        items = [transform_job_summary(o, self.defaults)
                 for o in await self._objects(TRANSFORM_JOB)]  # fmt: skip
        return page(request, items, "TransformJobSummaries", "TransformJobName",
                    "TransformJobStatus")  # fmt: skip

    async def StopTransformJob(self, request: JsonObject) -> JsonObject:
        """A job that has ended (``Completed``, ``Failed`` or ``Stopped``) is refused, as the
        platform refuses to stop a job that is not running (``The request was rejected
        because the training job is in status Stopped.``). A job still ``Stopping`` has not
        ended: a repeated stop, what a client retrying a stop whose answer it lost sends, is
        taken and changes nothing (the platform documents no refusal for it, and refusing it
        would fail a stop that took effect)."""
        name = required(request, "TransformJobName")
        obj = await self._job(name)
        state = job_status(obj)
        if state in ("Completed", "Failed", "Stopped"):
            raise ValidationException(f"The request was rejected because the transform job "
                                      f"{given_name(obj)} is in status {state}.")  # fmt: skip
        if state == "Stopping":
            return {}
        obj["spec"]["batch"]["stop"] = True
        obj["metadata"]["annotations"][MODIFIED_ANNOTATION] = str(time.time())
        stopped = {key: obj[key] for key in ("apiVersion", "kind", "metadata", "spec")}
        try:
            await self.store.replace_endpoint(stopped)
        except NotFound:
            await self._job(name)
        return {}
