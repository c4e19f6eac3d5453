"""The JSON 1.1 router over an in-memory store: targets, error shapes and codes as boto3 reads
them, case-insensitive names, statuses from the actuator's objects, lists, limits."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from infermodes.endpoints.status import parse_rfc3339, rfc3339
from infermodes.platform.router import create_router
from infermodes.platform.store import Unavailable
from infermodes.platform.translate import Defaults
from tests.unit.platform.memory import MemoryStore

XGBOOST = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
SERVERLESS = {"MemorySizeInMB": 2048, "MaxConcurrency": 5}


class Api:
    def __init__(self, defaults: Defaults | None = None) -> None:
        self.store = MemoryStore()
        app = FastAPI()
        app.include_router(create_router(self.store, defaults or Defaults()))
        self.client = TestClient(app)

    def raw(self, operation: str, body: bytes) -> Any:
        headers = {"X-Amz-Target": f"SageMaker.{operation}",
                   "Content-Type": "application/x-amz-json-1.1"}  # fmt: skip
        return self.client.post("/", content=body, headers=headers)

    def call(self, operation: str, **request: Any) -> dict[str, Any]:
        response = self.raw(operation, json.dumps(request).encode())
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-amz-json-1.1"
        result: dict[str, Any] = response.json()
        return result

    def error(self, operation: str, **request: Any) -> tuple[str, str]:
        """The code and message as botocore's JSON parser takes them (``__type``)."""
        response = self.raw(operation, json.dumps(request).encode())
        assert response.status_code == 400, response.text
        body = response.json()
        assert response.headers["x-amzn-errortype"] == body["__type"]
        return body["__type"], body["message"]

    def seed(self, endpoint: str = "Abalone", variant: dict[str, Any] | None = None) -> None:
        container = {"Image": XGBOOST, "ModelDataUrl": "s3://b/model.tar.gz"}
        self.call("CreateModel", ModelName="abalone", PrimaryContainer=container)
        self.call("CreateEndpointConfig", EndpointConfigName="cfg", ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "abalone",
             **(variant or {"ServerlessConfig": SERVERLESS})}])  # fmt: skip
        self.call("CreateEndpoint", EndpointName=endpoint, EndpointConfigName="cfg")


def test_unknown_operations_and_bodies_that_are_not_json_get_the_platforms_codes() -> None:
    api = Api()
    assert api.error("LaunchRocket")[0] == "UnknownOperationException"
    response = api.raw("ListModels", b"{not json")
    assert (response.status_code, response.json()["__type"]) == (400, "SerializationException")
    assert api.raw("ListModels", b"[1]").json()["__type"] == "SerializationException"
    response = api.client.post("/", content=b"{}")
    assert response.json()["__type"] == "UnknownOperationException"


def test_the_seed_flow_with_statuses_from_the_actuator() -> None:
    api = Api()
    api.seed()
    described = api.call("DescribeEndpoint", EndpointName="abalone")
    assert described["EndpointName"] == "Abalone"  # as given
    assert described["EndpointArn"] == "arn:aws:sagemaker:us-east-1:000000000000:endpoint/abalone"
    assert described["EndpointStatus"] == "Creating"
    assert described["ProductionVariants"][0]["CurrentServerlessConfig"] == SERVERLESS
    assert described["ProductionVariants"][0]["DeployedImages"][0]["SpecifiedImage"] == XGBOOST
    api.store.set_status("abalone", "InService", readyReplicas=0, desiredReplicas=0)
    assert api.call("DescribeEndpoint", EndpointName="Abalone")["EndpointStatus"] == "InService"
    api.store.set_status("abalone", "Failed", reason="ModelLoadFailed", message="bad tarball")
    failed = api.call("DescribeEndpoint", EndpointName="Abalone")
    assert (failed["EndpointStatus"], failed["FailureReason"]) == (
        "Failed", "ModelLoadFailed: bad tarball")  # fmt: skip
    api.call("DeleteEndpoint", EndpointName="ABALONE")
    code, message = api.error("DescribeEndpoint", EndpointName="Abalone")
    assert code == "ValidationException"  # what endpoint_deleted waits for
    assert message.startswith('Could not find endpoint "arn:aws:sagemaker:')


def test_names_differing_only_in_case_are_the_same_resource() -> None:
    api = Api()
    api.seed("Abalone")
    code, message = api.error("CreateEndpoint", EndpointName="ABALONE", EndpointConfigName="cfg")
    assert (code, message.split(" ")[0]) == ("ValidationException", "Cannot")
    assert api.error("CreateModel", ModelName="ABALONE", PrimaryContainer={
        "ModelDataUrl": "s3://b/m"})[0] == "ValidationException"  # fmt: skip
    assert api.call("DescribeModel", ModelName="Abalone")["ModelName"] == "abalone"


def test_every_not_found_has_the_platforms_code() -> None:
    api = Api()
    for operation, request in [
        ("DescribeModel", {"ModelName": "m"}),
        ("DeleteModel", {"ModelName": "m"}),
        ("DescribeEndpointConfig", {"EndpointConfigName": "c"}),
        ("DeleteEndpointConfig", {"EndpointConfigName": "c"}),
        ("DescribeEndpoint", {"EndpointName": "e"}),
        ("DeleteEndpoint", {"EndpointName": "e"}),
        ("UpdateEndpoint", {"EndpointName": "e", "EndpointConfigName": "c"}),
        ("CreateEndpoint", {"EndpointName": "e", "EndpointConfigName": "c"}),
    ]:
        assert api.error(operation, **request)[0] == "ValidationException", operation
    # the platform's answer for a job, what boto3's transform_job_completed_or_stopped waiter
    # fails on at once (ResourceNotFound, the model's listed error, it does not send)
    for operation in ("DescribeTransformJob", "StopTransformJob"):
        answer = api.error(operation, TransformJobName="j")
        assert answer == ("ValidationException", "Could not find requested job with name j")


def test_names_that_are_paths_are_refused() -> None:
    api = Api()
    for operation, key in [("DescribeModel", "ModelName"), ("DeleteModel", "ModelName"),
                           ("DeleteEndpointConfig", "EndpointConfigName"),
                           ("DescribeEndpoint", "EndpointName")]:  # fmt: skip
        code, message = api.error(operation, **{key: "../../endpoints/abalone"})
        assert code == "ValidationException"
        assert message.startswith(f"{key} '../../endpoints/abalone' must be 1 to 63 letters")


def job(name: str) -> dict[str, Any]:
    source = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}}
    return {
        "TransformJobName": name,
        "ModelName": "abalone",
        "TransformInput": {"DataSource": source},
        "TransformOutput": {"S3OutputPath": "s3://b/out/"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }


def test_transform_jobs_run_stop_and_share_names_with_endpoints() -> None:
    api = Api()
    api.seed("Abalone")
    arn = api.call("CreateTransformJob", **job("Job-1"))["TransformJobArn"]
    assert arn.endswith(":transform-job/job-1")
    assert api.call("DescribeTransformJob", TransformJobName="job-1")["TransformJobStatus"] == (
        "InProgress")  # fmt: skip
    api.call("StopTransformJob", TransformJobName="Job-1")
    assert api.store.endpoints["job-1"]["spec"]["batch"]["stop"] is True
    assert api.call("DescribeTransformJob", TransformJobName="Job-1")["TransformJobStatus"] == (
        "Stopping")  # fmt: skip
    api.store.set_status("job-1", "Stopped", endTime="2026-01-02T03:04:05Z")
    described = api.call("DescribeTransformJob", TransformJobName="Job-1")
    assert described["TransformJobStatus"] == "Stopped"
    # when it ended, as its status says (not when its Ready condition last changed: a job
    # that failed or stopped was never ready, and up's conditions start again at a restart)
    assert described["TransformEndTime"] == parse_rfc3339("2026-01-02T03:04:05Z")
    assert api.error("CreateTransformJob", **job("job-1"))[0] == "ResourceInUse"
    code, message = api.error("CreateTransformJob", **job("abalone"))
    assert (code, "taken by an endpoint" in message) == ("ResourceInUse", True)
    assert api.error("DescribeEndpoint", EndpointName="job-1")[0] == "ValidationException"
    assert [j["TransformJobName"] for j in
            api.call("ListTransformJobs")["TransformJobSummaries"]] == ["Job-1"]  # fmt: skip
    # it changed when it ended, after the stop was asked: LastModifiedTime and its filters
    # say so (it stayed the time of the last request)
    ended = rfc3339(time.time() + 60)
    api.store.set_status("job-1", "Stopped", endTime=ended)
    [summary] = api.call("ListTransformJobs")["TransformJobSummaries"]
    assert summary["LastModifiedTime"] == parse_rfc3339(ended)
    after = {"LastModifiedTimeAfter": parse_rfc3339(ended) - 1}
    assert len(api.call("ListTransformJobs", **after)["TransformJobSummaries"]) == 1


def test_a_stop_of_an_ended_job_is_refused_naming_it_and_a_repeated_stop_is_taken() -> None:
    """As the platform refuses to stop a job that is not running; a job still Stopping has not
    ended, so a stop sent again (a retry whose first answer was lost) is taken."""
    api = Api()
    api.seed("Abalone")
    api.call("CreateTransformJob", **job("Job-1"))
    api.call("StopTransformJob", TransformJobName="Job-1")
    stopping = json.dumps(api.store.endpoints["job-1"], sort_keys=True)
    assert api.call("StopTransformJob", TransformJobName="job-1") == {}
    assert json.dumps(api.store.endpoints["job-1"], sort_keys=True) == stopping
    for state in ("Stopped", "Completed", "Failed"):
        api.store.set_status("job-1", state)
        assert api.error("StopTransformJob", TransformJobName="job-1") == (
            "ValidationException",
            f"The request was rejected because the transform job Job-1 is in status {state}.",
        )


def test_the_caps_are_resource_limit_exceeded() -> None:
    api = Api(Defaults(max_endpoints=1, max_records=1))
    api.seed("one")
    code, _ = api.error("CreateEndpoint", EndpointName="two", EndpointConfigName="cfg")
    assert code == "ResourceLimitExceeded"
    container = {"ModelDataUrl": "s3://b/m"}
    assert api.error("CreateModel", ModelName="m2", PrimaryContainer=container)[0] == (
        "ResourceLimitExceeded")  # fmt: skip


def test_ended_transform_jobs_count_only_toward_the_cap_on_records() -> None:
    """boto3 cannot delete a transform job: ended ones used to fill the cap of endpoints and
    running jobs for good."""
    api = Api(Defaults(max_endpoints=1, max_records=3))
    api.seed("one")
    api.store.set_status("one", "Completed")  # as if it were an ended job
    api.store.endpoints["one"]["spec"]["mode"] = "batch"
    for name in ("two", "three"):
        api.call("CreateEndpoint", EndpointName=name, EndpointConfigName="cfg")
        api.store.set_status(name, "Stopped")
        api.store.endpoints[name]["spec"]["mode"] = "batch"
    code, message = api.error("CreateEndpoint", EndpointName="four", EndpointConfigName="cfg")
    assert code == "ResourceLimitExceeded" and "delete ended jobs" in message
    api.store.set_status("three", "InProgress")  # running: under the smaller cap
    del api.store.endpoints["two"]
    code, message = api.error("CreateEndpoint", EndpointName="four", EndpointConfigName="cfg")
    assert code == "ResourceLimitExceeded" and "running transform jobs" in message


def test_lists_filter_sort_and_page() -> None:
    api = Api()
    for name in ("alpha", "beta", "gamma-x", "delta-x"):
        api.call("CreateModel", ModelName=name, PrimaryContainer={"ModelDataUrl": "s3://b/m"})
    names = [m["ModelName"] for m in api.call("ListModels", SortBy="Name",
                                               SortOrder="Ascending")["Models"]]  # fmt: skip
    assert names == ["alpha", "beta", "delta-x", "gamma-x"]
    newest_first = [m["ModelName"] for m in api.call("ListModels")["Models"]]
    assert newest_first == ["delta-x", "gamma-x", "beta", "alpha"]
    assert [m["ModelName"] for m in api.call("ListModels", NameContains="-X")["Models"]] == [
        "delta-x", "gamma-x"]  # fmt: skip
    first = api.call("ListModels", MaxResults=3, SortBy="Name", SortOrder="Ascending")
    assert len(first["Models"]) == 3
    second = api.call("ListModels", MaxResults=3, SortBy="Name", SortOrder="Ascending",
                      NextToken=first["NextToken"])  # fmt: skip
    assert [m["ModelName"] for m in second["Models"]] == ["gamma-x"]
    assert "NextToken" not in second
    assert api.error("ListModels", MaxResults=500)[0] == "ValidationException"
    assert api.error("ListModels", NextToken="bogus")[0] == "ValidationException"
    assert api.error("DescribeEndpointConfig", EndpointConfigName=5) == (
        "ValidationException", "EndpointConfigName must be a string, got 5")  # fmt: skip
    for key in ("LastModifiedTimeAfter", "LastModifiedTimeBefore"):  # models have none
        code, message = api.error("ListModels", **{key: 0})
        assert (code, message) == ("ValidationException", f"{key} is not a filter of this list")
    api.seed("Ep-1")
    api.store.set_status("ep-1", "InService")
    assert api.call("ListEndpoints", StatusEquals="InService")["Endpoints"][0]["EndpointName"] == (
        "Ep-1")  # fmt: skip
    assert api.call("ListEndpoints", StatusEquals="Failed")["Endpoints"] == []


def test_update_endpoint_replaces_the_spec_and_reports_updating() -> None:
    api = Api()
    api.seed("ep")
    api.call("CreateEndpointConfig", EndpointConfigName="bigger", ProductionVariants=[
        {"VariantName": "v", "ModelName": "abalone", "InstanceType": "ml.m5.large",
         "InitialInstanceCount": 2}])  # fmt: skip
    _, message = api.error("UpdateEndpoint", EndpointName="ep", EndpointConfigName="bigger")
    assert message.startswith("Cannot update in-progress endpoint")
    api.store.set_status("ep", "InService")
    api.call("UpdateEndpoint", EndpointName="ep", EndpointConfigName="bigger")
    assert api.store.endpoints["ep"]["spec"]["realtime"] == {"minReplicas": 2, "maxReplicas": 2}
    described = api.call("DescribeEndpoint", EndpointName="ep")
    assert (described["EndpointConfigName"], described["EndpointStatus"]) == ("bigger", "Updating")
    api.store.set_status("ep", "Creating")  # an actuator starting the new spec, at once or not
    assert api.call("DescribeEndpoint", EndpointName="ep")["EndpointStatus"] == "Updating"
    api.store.set_status("ep", "InService")
    assert api.call("DescribeEndpoint", EndpointName="ep")["EndpointStatus"] == "InService"


@pytest.mark.parametrize("reason", ["Unschedulable", "FailedCreate", "ModelLoadFailed"])
def test_an_update_whose_pods_cannot_come_up_may_be_followed_by_another(reason: str) -> None:
    """A serverless endpoint updated to a memory size no node has room for stayed Updating
    (Unschedulable) for as long, and the UpdateEndpoint back was refused as in progress: a
    stalled update says why (FailureReason) and takes the next, as one that cannot load."""
    api = Api()
    api.seed("ep")
    api.call("CreateEndpointConfig", EndpointConfigName="back", ProductionVariants=[
        {"VariantName": "v", "ModelName": "abalone", "InstanceType": "ml.m5.large",
         "InitialInstanceCount": 1}])  # fmt: skip
    api.store.set_status("ep", "Updating", reason=reason, message="pod x cannot be scheduled")
    described = api.call("DescribeEndpoint", EndpointName="ep")
    assert described["FailureReason"] == f"{reason}: pod x cannot be scheduled"
    api.call("UpdateEndpoint", EndpointName="ep", EndpointConfigName="back")
    api.store.set_status("ep", "Updating", reason="RollingOut")
    _, message = api.error("UpdateEndpoint", EndpointName="ep", EndpointConfigName="back")
    assert message.startswith("Cannot update in-progress endpoint")


def test_update_endpoint_to_another_kind_of_workload_is_refused_and_changes_nothing() -> None:
    """Real-time and serverless share a workload; asynchronous endpoints have workers of
    their own: the operator could never switch one into the other in place."""
    api = Api()
    api.seed("ep")
    api.store.set_status("ep", "InService")
    api.call("CreateEndpointConfig", EndpointConfigName="queued", ProductionVariants=[
        {"VariantName": "v", "ModelName": "abalone", "InstanceType": "ml.m5.large",
         "InitialInstanceCount": 1}],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://b/out"}})  # fmt: skip
    before = json.dumps(api.store.endpoints["ep"], sort_keys=True)
    code, message = api.error("UpdateEndpoint", EndpointName="ep", EndpointConfigName="queued")
    assert code == "ValidationException"
    assert "from serverless to asynchronous inference" in message, message
    assert "delete it and create it again" in message
    assert json.dumps(api.store.endpoints["ep"], sort_keys=True) == before
    assert api.call("DescribeEndpoint", EndpointName="ep")["EndpointConfigName"] == "cfg"


def test_bodies_nested_past_the_parsers_depth_are_a_serialization_error() -> None:
    api = Api()
    for body in (b"[" * 100_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000):
        response = api.raw("ListModels", body)
        assert (response.status_code, response.json()["__type"]) == (400, "SerializationException")


def test_deleting_while_paging_skips_nothing_left_and_repeats_nothing() -> None:
    """A token names the last item given, not an offset: deleting what a page showed moves
    no item still there onto a page already read."""
    api = Api()
    names = [f"pg-{index:02}" for index in range(25)]
    for name in names:
        api.call("CreateModel", ModelName=name, PrimaryContainer={"ModelDataUrl": "s3://b/m"})
    seen: list[str] = []
    request: dict[str, object] = {"MaxResults": 5, "SortBy": "Name", "SortOrder": "Ascending"}
    for _ in range(10):
        answer = api.call("ListModels", **request)
        shown = [m["ModelName"] for m in answer["Models"]]
        seen += shown
        for name in shown[:2]:  # deleting some of what this page showed
            api.call("DeleteModel", ModelName=name)
        if "NextToken" not in answer:
            break
        request["NextToken"] = answer["NextToken"]
    assert seen == names
    left = [name for index, name in enumerate(names) if index % 5 >= 2]
    newest = api.call("ListModels", MaxResults=5)  # the default order: newest first
    api.call("DeleteModel", ModelName=newest["Models"][0]["ModelName"])
    second = api.call("ListModels", MaxResults=5, NextToken=newest["NextToken"])
    shown = [m["ModelName"] for m in newest["Models"] + second["Models"]]
    assert shown == left[::-1][:10]


def test_a_token_serves_only_the_list_and_order_it_was_given_for() -> None:
    api = Api()
    for name in ("a", "b", "c"):
        api.call("CreateModel", ModelName=name, PrimaryContainer={"ModelDataUrl": "s3://b/m"})
    token = api.call("ListModels", MaxResults=1)["NextToken"]
    for operation, request in (("ListEndpoints", {}), ("ListModels", {"SortBy": "Name"}),
                               ("ListModels", {"SortOrder": "Ascending"})):  # fmt: skip
        code, message = api.error(operation, NextToken=token, **request)
        assert code == "ValidationException" and "another list or order" in message


@pytest.mark.parametrize(
    "token",
    ["9" * 5_000, "\u00b2", "\u0661", "99999999999999999999", "-1", "0", "bnVsbA==",
     "WyJNb2RlbHMiLCAiQ3JlYXRpb25UaW1lIiwgIkRlc2NlbmRpbmciLCAieCIsICJhIl0=",
     # [list, sort, order, 1e400 | NaN | -Infinity, name]: no item has such a time
     "WyJNb2RlbHMiLCJDcmVhdGlvblRpbWUiLCJEZXNjZW5kaW5nIiwxZTQwMCwiYSJd",
     "WyJNb2RlbHMiLCJDcmVhdGlvblRpbWUiLCJEZXNjZW5kaW5nIixOYU4sImEiXQ==",
     "WyJNb2RlbHMiLCJDcmVhdGlvblRpbWUiLCJEZXNjZW5kaW5nIiwtSW5maW5pdHksImEiXQ=="],
)  # fmt: skip
def test_next_tokens_this_api_never_gave_are_refused(token: str) -> None:
    api = Api()
    api.seed()
    code, message = api.error("ListModels", NextToken=token)
    assert code == "ValidationException" and "NextToken" in message


def test_name_filters_that_are_not_strings_are_refused() -> None:
    api = Api()
    api.seed()
    for value in (5, {"a": 1}, ["abalone"]):
        assert api.error("ListModels", NameContains=value)[0] == "ValidationException"


def test_the_gateway_refuses_file_uris_through_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its pods' files are not the caller's: ``file://`` would read them for whoever calls."""
    from unittest import mock

    from infermodes.gateway.app import platform_router
    from infermodes.gateway.table import Table
    from infermodes.platform import router
    from infermodes.settings import GatewaySettings

    seen: list[Defaults] = []
    monkeypatch.setattr(router, "create_router", lambda _store, defaults: seen.append(defaults))
    platform_router(GatewaySettings(platform_namespace="platform"), mock.Mock(), Table())
    assert [d.file_uris for d in seen] == [False]


def test_records_have_no_status_to_sort_or_filter_by() -> None:
    api = Api()
    api.seed()
    for operation in ("ListModels", "ListEndpointConfigs"):
        assert "SortBy 'Status'" in api.error(operation, SortBy="Status")[1]
        assert "StatusEquals" in api.error(operation, StatusEquals="InService")[1]


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_numbers_json_cannot_carry_are_a_serialization_error(number: bytes) -> None:
    """Kept, they would be answered back as ``NaN``, which is not JSON."""
    api = Api()
    api.seed()
    response = api.raw("ListModels", b'{"CreationTimeBefore": ' + number + b"}")
    assert (response.status_code, response.json()["__type"]) == (400, "SerializationException")


def test_names_with_a_trailing_newline_are_refused() -> None:
    """``$`` matches before a final newline: ``abc\\n`` passed the name patterns (a file
    ``abc\\n.json`` under up, an object name the Kubernetes API refuses)."""
    from infermodes.local.platform_store import file_name

    api = Api()
    api.seed()
    container = {"ModelDataUrl": "s3://b/m"}
    assert api.error("CreateModel", ModelName="abc\n", PrimaryContainer=container)[0] == (
        "ValidationException")  # fmt: skip
    assert api.error("CreateEndpoint", EndpointName="ep\n", EndpointConfigName="cfg")[0] == (
        "ValidationException")  # fmt: skip
    with pytest.raises(ValueError, match="not a record name"):
        file_name("abc\n")


def test_refusals_quote_a_callers_value_cut_short() -> None:
    api = Api()
    api.seed()
    huge = "a" * 500_000
    container = {"ModelDataUrl": "s3://b/m"}
    for operation, request in (("CreateModel", {"ModelName": huge, "PrimaryContainer": container}),
                               ("CreateModel", {"ModelName": "m", "PrimaryContainer": {
                                   "ModelDataUrl": "s3://" + huge[:300_000]}}),
                               ("ListModels", {"NextToken": huge})):  # fmt: skip
        code, message = api.error(operation, **request)
        assert code == "ValidationException" and len(message) < 1_000, message[:200]


def test_status_filters_are_the_platforms_statuses() -> None:
    api = Api()
    api.seed()
    assert "StatusEquals 'Bogus'" in api.error("ListEndpoints", StatusEquals="Bogus")[1]
    assert api.error("ListTransformJobs", StatusEquals="InService")[0] == "ValidationException"
    assert api.call("ListEndpoints", StatusEquals="RollingBack")["Endpoints"] == []


@pytest.mark.parametrize("text", [b'"\\ud800"', b'"a\\udfff"', b'"\\udc00\\ud800"'])
def test_strings_with_lone_surrogates_are_a_serialization_error(text: bytes) -> None:
    api = Api()
    body = b'{"ModelName": "m", "PrimaryContainer": {"ModelDataUrl": "s3://b/k", "Image": ' + text
    response = api.raw("CreateModel", body + b"}}")
    assert (response.status_code, response.json()["__type"]) == (400, "SerializationException")
    assert api.call("ListModels") == {"Models": []}
    assert api.call("ListModels", NameContains="\U0001f600") == {"Models": []}  # a pair is fine


def test_a_control_character_a_metadata_webhook_and_a_bad_filter_are_refused_by_member() -> None:
    """A NUL in a URI took `infermodes up` down (no OS call takes one); a link-local ErrorTopic
    was blamed on InitialInstanceCount; a port above 65535 was taken (modulo 65536); a filter
    the instances cannot read failed the job."""
    from tests.unit.platform.test_translate import transform_request

    api = Api()
    code, message = api.error("CreateModel", ModelName="nul", PrimaryContainer={
        "Image": XGBOOST, "ModelDataUrl": "s3://b/model.tar.gz\x00x"})  # fmt: skip
    assert code == "ValidationException" and "ModelDataUrl" in message, message
    api.seed()
    variant = {"VariantName": "v", "ModelName": "abalone", "InstanceType": "ml.m5.large",
               "InitialInstanceCount": 1}  # fmt: skip
    notify = {"ErrorTopic": "http://169.254.169.254/latest"}
    code, message = api.error("CreateEndpointConfig", EndpointConfigName="meta",
                              ProductionVariants=[variant], AsyncInferenceConfig={
                                  "OutputConfig": {"S3OutputPath": "s3://b/out",
                                                   "NotificationConfig": notify}})  # fmt: skip
    assert ("AsyncInferenceConfig.OutputConfig.NotificationConfig.ErrorTopic: "
            "must not be a link-local or metadata address") in message, message  # fmt: skip
    notify = {"SuccessTopic": "http://127.0.0.1:99999/x?token=T0K3N"}
    code, message = api.error("CreateEndpointConfig", EndpointConfigName="port",
                              ProductionVariants=[variant], AsyncInferenceConfig={
                                  "OutputConfig": {"S3OutputPath": "s3://b/out",
                                                   "NotificationConfig": notify}})  # fmt: skip
    assert code == "ValidationException", message
    assert ("AsyncInferenceConfig.OutputConfig.NotificationConfig.SuccessTopic: "
            "its port 99999 is not one of 1 to 65535") in message, message  # fmt: skip
    assert "T0K3N" not in message
    for member, value, named in (
        ("TransformInput", {"DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://b/in/\x00"}}}, "S3Uri"),
        ("DataProcessing", {"InputFilter": "$[[["}, "unsupported JSONPath '$[[['"),
        # JSON lines in, CSV out, joined: no instance can do it (it exited with 2)
        ("TransformOutput", {"S3OutputPath": "s3://b/out/", "Accept": "text/csv"},
         "DataProcessing.JoinSource Input joins like with like"),
    ):  # fmt: skip
        code, message = api.error("CreateTransformJob", **transform_request(**{member: value}))
        assert code == "ValidationException" and named in message, message


def test_an_update_that_cannot_roll_out_shows_why_and_another_update_may_replace_it() -> None:
    """The spec before it still serves (Updating): DescribeEndpoint gives the FailureReason,
    and UpdateEndpoint (a revert, a fix) is taken, as after the platform's rollback; an update
    that is rolling out as it should is still in progress."""
    api = Api()
    api.seed("ep")
    api.store.set_status("ep", "Updating", reason="RollingOut", message="1/1 replicas ready")
    code, _ = api.error("UpdateEndpoint", EndpointName="ep", EndpointConfigName="cfg")
    assert code == "ValidationException"
    assert "FailureReason" not in api.call("DescribeEndpoint", EndpointName="ep")
    api.store.set_status("ep", "Updating", reason="ModelLoadFailed",
                         message="model cannot be loaded: no such object")  # fmt: skip
    described = api.call("DescribeEndpoint", EndpointName="ep")
    assert described["EndpointStatus"] == "Updating"
    assert described["FailureReason"] == "ModelLoadFailed: model cannot be loaded: no such object"
    api.call("UpdateEndpoint", EndpointName="ep", EndpointConfigName="cfg")
    # the fix applied: the status of the spec before it says nothing of this one
    generation = api.store.endpoints["ep"]["metadata"]["generation"]
    api.store.endpoints["ep"]["status"]["observedGeneration"] = generation - 1
    assert "FailureReason" not in api.call("DescribeEndpoint", EndpointName="ep")
    code, _ = api.error("UpdateEndpoint", EndpointName="ep", EndpointConfigName="cfg")
    assert code == "ValidationException"  # in progress


def test_instance_types_and_tags_are_held_to_the_platforms_forms_and_limits() -> None:
    from tests.unit.platform.test_translate import transform_request

    api = Api()
    api.seed()
    variant = {"VariantName": "v", "ModelName": "abalone", "InitialInstanceCount": 1,
               "InstanceType": "ml.bogus"}  # fmt: skip
    code, message = api.error("CreateEndpointConfig", EndpointConfigName="odd",
                              ProductionVariants=[variant])  # fmt: skip
    assert "ProductionVariants[0].InstanceType 'ml.bogus' is not an instance type" in message
    resources = {"InstanceType": "m5.large", "InstanceCount": 1}
    code, message = api.error("CreateTransformJob",
                              **transform_request(TransformResources=resources))  # fmt: skip
    assert "TransformResources.InstanceType 'm5.large' is not an instance type" in message
    tags = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    container = {"Image": XGBOOST, "ModelDataUrl": "s3://b/model.tar.gz"}
    code, message = api.error("CreateModel", ModelName="tagged", PrimaryContainer=container,
                              Tags=tags)  # fmt: skip
    assert (code, message) == ("ValidationException", "Tags: at most 50 tags, got 51")
    code, message = api.error("CreateEndpoint", EndpointName="t", EndpointConfigName="cfg",
                              Tags=[{"Key": "k" * 129, "Value": "v"}])  # fmt: skip
    assert message.startswith("Tags: a key has 1 to 128 characters, got 'kkk"), message
    assert message.endswith("... (129 characters)"), message
    code, message = api.error("CreateEndpoint", EndpointName="t", EndpointConfigName="cfg",
                              Tags=[{"Key": "k", "Value": "v" * 300}])  # fmt: skip
    assert message == "Tags: a value has at most 256 characters; the value of 'k' has 300"
    twice = [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]
    code, message = api.error("CreateEndpoint", EndpointName="t", EndpointConfigName="cfg",
                              Tags=twice)  # fmt: skip
    assert message == "Tags: the key 'k' is given twice"
    api.call("CreateModel", ModelName="tagged", PrimaryContainer=container, Tags=tags[:50])


def test_a_write_the_store_refuses_is_the_callers_error_naming_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cluster's quota or admission policy refusing an object came back as a 500, which
    boto3 retries; it is the platform's code for a limit or bad input, with what was said."""
    from infermodes.platform.store import LimitExceeded, Refused

    api = Api()
    container = {"Image": XGBOOST, "ModelDataUrl": "s3://b/model.tar.gz"}

    async def over_quota(*_: Any) -> None:
        raise LimitExceeded(
            "the cluster refused to create InferenceModel 'abalone': "
            "exceeded quota: models, requested: count=1, limited: count=0"
        )

    monkeypatch.setattr(api.store, "create_record", over_quota)
    code, message = api.error("CreateModel", ModelName="abalone", PrimaryContainer=container)
    assert code == "ResourceLimitExceeded" and "exceeded quota: models" in message

    async def denied(*_: Any) -> None:
        raise Refused("the cluster refused to create InferenceModel 'abalone': admission "
                      "webhook denied the request: images must come from our registry")  # fmt: skip

    monkeypatch.setattr(api.store, "create_record", denied)
    code, message = api.error("CreateModel", ModelName="abalone", PrimaryContainer=container)
    assert code == "ValidationException" and "images must come from our registry" in message


def test_members_the_platform_requires_are_required_of_a_raw_request() -> None:
    """boto3 checks them on its side; a raw request without TransformResources ran a job whose
    Describe then lacked it, and a ServerlessConfig without a memory size was taken."""
    from tests.unit.platform.test_translate import transform_request

    api = Api()
    api.seed()
    one_type = {"InstanceType": "ml.m5.large"}
    for resources, missing in ((None, "TransformResources"),
                               ({}, "TransformResources.InstanceType"),
                               (one_type, "TransformResources.InstanceCount")):  # fmt: skip
        request = transform_request(TransformResources=resources)
        assert api.error("CreateTransformJob", **request) == (
            "ValidationException",
            f"{missing} is required",
        )
    variant = {
        "VariantName": "v",
        "ModelName": "abalone",
        "ServerlessConfig": {"MaxConcurrency": 1},
    }
    assert api.error("CreateEndpointConfig", EndpointConfigName="no-memory",
                     ProductionVariants=[variant]) == (
        "ValidationException", "ProductionVariants[0].ServerlessConfig.MemorySizeInMB is required"
    )  # fmt: skip
    missing_model = {"VariantName": "v", "ServerlessConfig": SERVERLESS}
    assert api.error("CreateEndpointConfig", EndpointConfigName="no-model",
                     ProductionVariants=[missing_model]) == (
        "ValidationException", "ProductionVariants[0].ModelName is required"
    )  # fmt: skip
    _, message = api.error("CreateEndpointConfig", EndpointConfigName="no-model",
                              ProductionVariants=[{**missing_model, "ModelName": 5}])  # fmt: skip
    assert message == "ProductionVariants[0].ModelName must be a string, got 5"
    assert api.error("CreateModel", ModelName="bare") == (
        "ValidationException",
        "PrimaryContainer is required (or Containers, of one)",
    )
    long_value = {"Image": XGBOOST, "ModelDataUrl": "s3://b/model.tar.gz",
                  "Environment": {"SAGEMAKER_CONTAINER_LOG_LEVEL": "x" * 900_000}}  # fmt: skip
    assert api.error("CreateModel", ModelName="big-env", PrimaryContainer=long_value) == (
        "ValidationException",
        "PrimaryContainer.Environment SAGEMAKER_CONTAINER_LOG_LEVEL: a value has at most 1024 "
        "characters, got 900000",
    )


def test_a_doubled_target_or_a_coded_body_is_refused_not_guessed() -> None:
    api = Api()
    headers = [("X-Amz-Target", "SageMaker.ListModels"), ("X-Amz-Target", "SageMaker.DeleteModel"),
               ("Content-Type", "application/x-amz-json-1.1")]  # fmt: skip
    twice = api.client.post("/", content=b"{}", headers=headers)
    assert twice.status_code == 400
    said = "X-Amz-Target given 2 times: one operation per request"
    assert twice.json() == {"__type": "ValidationException", "message": said}
    gzipped = api.client.post("/", content=b"{}", headers={
        "X-Amz-Target": "SageMaker.ListModels", "Content-Type": "application/x-amz-json-1.1",
        "Content-Encoding": "gzip"})  # fmt: skip
    assert gzipped.status_code == 400 and gzipped.json()["__type"] == "SerializationException"
    assert "gzip" in gzipped.json()["message"]


def test_an_endpoint_being_deleted_is_deleting_and_takes_no_update() -> None:
    """An endpoint object with a deletionTimestamp (a finalizer, the operator's or another
    controller's, still holds it): Describe and List say Deleting, whatever phase its status
    had, and UpdateEndpoint is refused (the object is going away; the platform refuses to
    update an endpoint it is deleting)."""
    api = Api()
    api.seed("ep")
    api.store.set_status("ep", "InService")
    api.store.endpoints["ep"]["metadata"]["deletionTimestamp"] = "2026-12-05T21:00:00Z"
    assert api.call("DescribeEndpoint", EndpointName="ep")["EndpointStatus"] == "Deleting"
    listed = api.call("ListEndpoints")["Endpoints"]
    assert [e["EndpointStatus"] for e in listed] == ["Deleting"]
    assert [e["EndpointName"] for e in api.call("ListEndpoints", StatusEquals="Deleting")[
        "Endpoints"]] == ["ep"]  # fmt: skip
    before = json.dumps(api.store.endpoints["ep"], sort_keys=True)
    code, message = api.error("UpdateEndpoint", EndpointName="ep", EndpointConfigName="cfg")
    assert code == "ValidationException" and "being deleted" in message, message
    assert json.dumps(api.store.endpoints["ep"], sort_keys=True) == before


@pytest.mark.parametrize(
    ("failure", "status"),
    [(RuntimeError("the store broke"), 500), (Unavailable("the API server is away"), 503)],
)
def test_a_failure_of_ours_is_logged_naming_the_request_id_the_caller_got(
    failure: Exception, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer's x-amzn-RequestId (boto3's RequestId, what a ticket quotes) was made apart
    from the log line, which named no request: the two could not be matched."""
    api = Api()

    async def broken(kind: Any) -> list[Any]:
        raise failure

    api.store.list_records = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="infermodes.platform"):
        response = api.raw("ListModels", b"{}")
    assert response.status_code == status
    request_id = response.headers["x-amzn-requestid"]
    assert any(request_id in record.getMessage() for record in caplog.records), caplog.text


def test_describe_endpoint_answers_the_variants_managed_instance_scaling() -> None:
    """ProductionVariantSummary has ManagedInstanceScaling in the platform's model: a boto3
    user reading the range back from DescribeEndpoint found none."""
    api = Api()
    scaling = {"Status": "ENABLED", "MinInstanceCount": 1, "MaxInstanceCount": 5}
    api.seed(variant={"InstanceType": "ml.m5.large", "InitialInstanceCount": 3,
                      "ManagedInstanceScaling": scaling})  # fmt: skip
    api.store.set_status("abalone", "InService", readyReplicas=3, desiredReplicas=3)
    variant = api.call("DescribeEndpoint", EndpointName="Abalone")["ProductionVariants"][0]
    assert variant["ManagedInstanceScaling"] == scaling
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (3, 3)
