"""Every member of a valid request of each operation left out or replaced by values of the
wrong type or range: the answer is the platform's 4xx, changing nothing, or a success whose
result can be read back; never a 500."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.platform.test_router import XGBOOST, Api
from tests.unit.platform.test_translate import transform_request

SAMPLES: dict[str, dict[str, Any]] = {
    "CreateModel": {"ModelName": "m2", "PrimaryContainer": {
        "Image": XGBOOST, "ModelDataUrl": "s3://b/m",
        "Environment": {"SAGEMAKER_INFERENCE_OUTPUT": "predicted_label"}}},
    "CreateEndpointConfig": {
        "EndpointConfigName": "c2",
        "ProductionVariants": [{
            "VariantName": "v", "ModelName": "abalone", "InstanceType": "ml.m5.large",
            "InitialVariantWeight": 1.0,
            "InitialInstanceCount": 1, "ManagedInstanceScaling": {
                "Status": "ENABLED", "MinInstanceCount": 1, "MaxInstanceCount": 2}}],
        "AsyncInferenceConfig": {
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
            "OutputConfig": {"S3OutputPath": "s3://b/o",
                             "NotificationConfig": {"SuccessTopic": "http://127.0.0.1:9/"}}},
    },
    "CreateEndpoint": {"EndpointName": "e2", "EndpointConfigName": "cfg"},
    "UpdateEndpoint": {"EndpointName": "Abalone", "EndpointConfigName": "cfg"},
    "CreateTransformJob": transform_request(),
    "ListEndpoints": {"SortBy": "Name", "SortOrder": "Ascending", "MaxResults": 5,
                      "NameContains": "a", "StatusEquals": "InService",
                      "CreationTimeBefore": 2e9, "NextToken": "0"},
    "ListModels": {"SortBy": "Name", "MaxResults": 5, "CreationTimeAfter": 1.0},
    "ListTransformJobs": {"StatusEquals": "Completed", "SortBy": "Status"},
    "DescribeEndpoint": {"EndpointName": "Abalone"},
    "StopTransformJob": {"TransformJobName": "j"},
    "DeleteModel": {"ModelName": "zzz"},
}  # fmt: skip
CODES = ("ValidationException", "ResourceInUse", "SerializationException")
MISSING = object()  # the member left out
WRONG = [MISSING, None, "x", "", 1, -1, 1.5, True, [], {}, [1], {"a": 1}, "9" * 80, "s3://b/m\x00"]


def paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
        value, list) else ()  # fmt: skip
    for key, inner in items:
        yield from paths(inner, (*path, key))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return {} if new is MISSING else new
    changed = copy.deepcopy(value)
    target = changed
    for key in path[:-1]:
        target = target[key]
    if new is MISSING:
        del target[path[-1]]
    else:
        target[path[-1]] = new
    return changed


@pytest.mark.parametrize("operation", sorted(SAMPLES))
def test_wrong_members_are_answered_4xx_never_500(operation: str) -> None:
    api = Api()
    api.seed()
    api.store.set_status("abalone", "InService")
    sample = SAMPLES[operation]
    for path in paths(sample):
        for value in WRONG:
            request = replaced(sample, path, value)
            before = copy.deepcopy((api.store.records, api.store.endpoints))
            response = api.raw(operation, json.dumps(request).encode())
            assert response.status_code < 500, (path, value, response.text)
            if response.status_code >= 400:
                assert response.json()["__type"] in CODES
                assert (api.store.records, api.store.endpoints) == before, (path, value)
            elif operation in FOLLOW_UPS:  # what was kept can be answered back
                answered(api, request, *FOLLOW_UPS[operation])


# What a create kept, read back: (name member, Describe, List); CreateEndpointConfig's is read
# by CreateEndpoint and DescribeEndpoint too (an endpoint answers with its config's variant).
FOLLOW_UPS = {
    "CreateModel": ("ModelName", "DescribeModel", "ListModels"),
    "CreateEndpointConfig": ("EndpointConfigName", "DescribeEndpointConfig",
                             "ListEndpointConfigs"),
    "CreateEndpoint": ("EndpointName", "DescribeEndpoint", "ListEndpoints"),
    "CreateTransformJob": ("TransformJobName", "DescribeTransformJob", "ListTransformJobs"),
}  # fmt: skip


def answered(api: Any, request: dict[str, Any], key: str, describe: str, listing: str) -> None:
    name = request[key]
    calls = [(describe, {key: name}), (listing, {})]
    if describe == "DescribeEndpointConfig":
        calls += [("CreateEndpoint", {"EndpointName": "probe", "EndpointConfigName": name}),
                  ("DescribeEndpoint", {"EndpointName": "probe"}),
                  ("DeleteEndpoint", {"EndpointName": "probe"})]  # fmt: skip
    for operation, body in calls:
        response = api.raw(operation, json.dumps(body).encode())
        assert response.status_code == 200, (request, operation, response.text)
    deleting = {"DescribeModel": "DeleteModel", "DescribeEndpointConfig": "DeleteEndpointConfig",
                "DescribeEndpoint": "DeleteEndpoint"}.get(describe)  # fmt: skip
    if deleting is not None:  # the next variant may use the name again
        assert api.raw(deleting, json.dumps({key: name}).encode()).status_code == 200
    else:  # a transform job: the API has no delete
        del api.store.endpoints[name.lower()]


NAMED = {"CreateModel": "ModelName", "CreateEndpointConfig": "EndpointConfigName",
         "CreateEndpoint": "EndpointName", "CreateTransformJob": "TransformJobName",
         "DescribeEndpoint": "EndpointName", "StopTransformJob": "TransformJobName"}  # fmt: skip


@pytest.mark.parametrize("operation", sorted(NAMED))
@pytest.mark.parametrize("value", [MISSING, None], ids=["left out", "null"])
def test_a_name_left_out_or_null_is_said_to_be_required(operation: str, value: Any) -> None:
    """A raw request without its name (boto3 refuses one before sending) was told that
    "None must be 1 to 63 letters ...", as if a name had been given."""
    api = Api()
    api.seed()
    field = NAMED[operation]
    response = api.raw(
        operation, json.dumps(replaced(SAMPLES[operation], (field,), value)).encode()
    )
    assert response.status_code == 400, response.text
    assert response.json()["__type"] == "ValidationException"
    assert f"{field} is required" in response.json()["message"], response.text
