"""``infermodes gateway`` with access keys, in front of a real model server, called by boto3's
real ``sagemaker-runtime`` client: signed requests are served (the endpoint's name in any case),
a wrong secret, an unknown key or no signature get the platform's 403 codes through boto3, the
body limits still hold; without keys the gateway says it is open."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import httpx
import numpy as np
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import AbaloneModel
from tests.support.gateway import GatewayProcess, running_gateway, static_endpoint
from tests.support.processes import ServerProcess, running_server, wait_until

KEY_ID, SECRET = "AKIAGATEWAYTEST", "gateway-secret/+="
LIMIT = 1000  # bytes a serverless or realtime invocation may carry here


@pytest.fixture(scope="module")
def server(
    abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "1"]
    with running_server(args, log) as process:
        yield process


def endpoints(server: ServerProcess) -> list[dict[str, Any]]:
    address = server.url.removeprefix("http://")
    return [static_endpoint("abalone-sl", "serverless", [address], maxConcurrency=5)]


@pytest.fixture(scope="module")
def gateway(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = {
        "INFERMODES_GATEWAY_ACCESS_KEYS": f"AKIAOTHER:x,{KEY_ID}:{SECRET}",
        "INFERMODES_GATEWAY_SERVERLESS_MAX_PAYLOAD_BYTES": str(LIMIT),
        "INFERMODES_GATEWAY_REALTIME_MAX_PAYLOAD_BYTES": str(LIMIT),
    }
    directory = tmp_path_factory.mktemp("gateway")
    with running_gateway(endpoints(server), directory, env=env) as process:
        yield process


def runtime(url: str, key_id: str = KEY_ID, secret: str = SECRET) -> Any:
    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        config=Config(retries={"total_max_attempts": 1}))  # fmt: skip


def signed_post(url: str, body: bytes, service: str = "sagemaker") -> httpx.Response:
    """A POST signed by botocore's own signer, sent by httpx."""
    request = AWSRequest(method="POST", url=url, data=body)
    SigV4Auth(Credentials(KEY_ID, SECRET), service, "us-east-1").add_auth(request)
    return httpx.post(url, content=body, headers=dict(request.headers.items()), timeout=30)


def to_csv(rows: np.ndarray) -> bytes:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()


def test_signed_invocations_are_served_and_the_name_may_carry_upper_case(
    gateway: GatewayProcess, abalone_model: AbaloneModel
) -> None:
    rows = abalone_model.test_rows[:5]
    answer = runtime(gateway.url).invoke_endpoint(
        EndpointName="Abalone-SL", Body=to_csv(rows), ContentType="text/csv"
    )
    got = np.array(answer["Body"].read().split(), dtype=np.float32)
    booster: Any = abalone_model.booster()
    assert np.array_equal(got, booster.inplace_predict(rows))
    assert httpx.get(f"{gateway.url}/readyz").text == "ok"  # probes carry no signature


@pytest.mark.parametrize(
    ("key_id", "secret", "code"),
    [(KEY_ID, "not-the-secret", "InvalidSignatureException"),
     ("AKIAUNKNOWN", SECRET, "UnrecognizedClientException")],
)  # fmt: skip
def test_a_wrong_secret_or_an_unknown_key_is_refused_with_the_platforms_code(
    gateway: GatewayProcess, key_id: str, secret: str, code: str
) -> None:
    with pytest.raises(ClientError) as caught:
        runtime(gateway.url, key_id, secret).invoke_endpoint(
            EndpointName="abalone-sl", Body=b"1,2,3", ContentType="text/csv"
        )
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert SECRET not in gateway.log and "not-the-secret" not in gateway.log


def test_a_request_signed_with_the_right_key_for_another_service_is_refused(
    gateway: GatewayProcess,
) -> None:
    response = signed_post(f"{gateway.url}/endpoints/abalone-sl/invocations", b"1,2,3", "s3")
    assert response.status_code == 403, response.text
    assert response.headers["x-amzn-errortype"] == "InvalidSignatureException"
    assert "scoped to correct service: 'sagemaker'" in response.json()["message"]


def test_a_request_signed_six_minutes_ago_is_a_signature_expired_and_not_retried(
    gateway: GatewayProcess,
) -> None:
    stale = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(minutes=6)
    client = boto3.client("sagemaker-runtime", endpoint_url=gateway.url, region_name="us-east-1",
                          aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)  # fmt: skip
    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=stale),
        pytest.raises(ClientError) as caught,
    ):
        client.invoke_endpoint(EndpointName="abalone-sl", Body=b"1,2,3", ContentType="text/csv")
    error = caught.value.response
    assert error["Error"]["Code"] == "InvalidSignatureException"
    assert error["Error"]["Message"].startswith("Signature expired:")
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["ResponseMetadata"]["RetryAttempts"] == 0  # boto3's default retries skip it


def test_unsigned_requests_to_any_route_are_refused(gateway: GatewayProcess) -> None:
    for path in ("/endpoints/abalone-sl/invocations", "/endpoints/abalone-sl/async-invocations",
                 "/"):  # fmt: skip
        response = httpx.post(f"{gateway.url}{path}", content=b"1,2,3")
        assert response.status_code == 403, (path, response.text)
        assert response.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
        assert response.json()["__type"] == "MissingAuthenticationTokenException"


def test_the_body_limits_hold_for_signed_requests(gateway: GatewayProcess) -> None:
    client = runtime(gateway.url)
    with pytest.raises(ClientError) as caught:  # the endpoint's own limit, after verification
        client.invoke_endpoint(EndpointName="abalone-sl", Body=b"1" * (LIMIT + 1))
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    too_large = signed_post(f"{gateway.url}/endpoints/abalone-sl/invocations", b"1" * (2 << 20))
    assert too_large.status_code == 413, too_large.text  # read no further than the limit


def test_keys_in_a_file_are_followed_as_it_changes_without_a_restart(
    server: ServerProcess, tmp_path: Path, abalone_model: AbaloneModel
) -> None:
    """The chart mounts gateway.auth.secretRef as a file: a key added to the Secret is taken,
    one removed is refused, by the same process; a change that cannot be read keeps the
    keys read before, and the log names the file, never a key."""
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY_ID}:{SECRET}\n")
    row = to_csv(abalone_model.test_rows[:1])
    env = {"INFERMODES_GATEWAY_ACCESS_KEYS_FILE": str(keys)}
    with running_gateway(endpoints(server), tmp_path, env=env) as gateway:

        def code(key_id: str, secret: str) -> str:
            try:
                runtime(gateway.url, key_id, secret).invoke_endpoint(
                    EndpointName="abalone-sl", Body=row, ContentType="text/csv"
                )
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])
            return "served"

        assert code(KEY_ID, SECRET) == "served"
        assert code("AKIAROTATED", "rotated-secret") == "UnrecognizedClientException"
        pid = gateway.proc.pid
        rotated = tmp_path / "rotated"  # written whole and renamed, as the kubelet swaps it
        rotated.write_text("AKIAROTATED:rotated-secret\n")
        rotated.replace(keys)
        wait_until(lambda: code("AKIAROTATED", "rotated-secret") == "served", 30,
                   "the added key to be taken")  # fmt: skip
        assert code(KEY_ID, SECRET) == "UnrecognizedClientException"  # removed: refused
        keys.write_text("not an entry")  # looked at by the next signed requests: refused
        served = lambda: code("AKIAROTATED", "rotated-secret") == "served"  # noqa: E731
        wait_until(lambda: served() and "the 1 read before stay" in gateway.log, 30,
                   "the unreadable change to be refused, the keys kept")  # fmt: skip
        assert served() and gateway.proc.pid == pid and gateway.proc.poll() is None
    assert "rotated-secret" not in gateway.log and SECRET not in gateway.log
    assert f"{keys}: access key entry 1 must be" in gateway.log


def test_without_keys_the_gateway_says_it_is_open(
    server: ServerProcess, tmp_path: Path, abalone_model: AbaloneModel
) -> None:
    with running_gateway(endpoints(server), tmp_path) as gateway:
        assert "OPEN" in httpx.get(f"{gateway.url}/readyz").text
        assert "NO ACCESS KEYS: this gateway is OPEN" in gateway.log
        answer = httpx.post(f"{gateway.url}/endpoints/Abalone-SL/invocations",
                            content=to_csv(abalone_model.test_rows[:1]),
                            headers={"content-type": "text/csv"})  # fmt: skip
        assert answer.status_code == 200, answer.text


def test_a_misspelt_keys_variable_is_named_in_one_warning_with_the_setting_it_meant(
    server: ServerProcess, tmp_path: Path
) -> None:
    """``ACESS_KEYS`` was ignored without a word, the gateway open: it still starts (a
    variable a later release reads must not stop this one), and says why it is open."""
    env = {"INFERMODES_GATEWAY_ACESS_KEYS": f"{KEY_ID}:{SECRET}"}
    with running_gateway(endpoints(server), tmp_path, env=env) as gateway:
        assert "OPEN" in httpx.get(f"{gateway.url}/readyz").text
        warnings = [line for line in gateway.log.splitlines() if "no such setting" in line]
    assert len(warnings) == 1, gateway.log
    assert warnings[0].endswith(
        "WARNING infermodes.settings: these INFERMODES_GATEWAY_* variables are ignored: "
        "INFERMODES_GATEWAY_ACESS_KEYS (no such setting; did you mean "
        "INFERMODES_GATEWAY_ACCESS_KEYS?)"
    )
    assert SECRET not in gateway.log and KEY_ID not in gateway.log


def test_on_loopback_only_requests_addressed_to_another_name_are_refused(
    server: ServerProcess, tmp_path: Path, abalone_model: AbaloneModel
) -> None:
    """DNS rebinding: a web page's own name resolving to 127.0.0.1 reaches an open gateway on
    loopback with that name as its Host; such requests are refused on every route, and so is a
    cross-site post from another page (its Origin), while clients addressing it as localhost,
    127.0.0.1 (in any spelling) or boto3 are served."""
    body = to_csv(abalone_model.test_rows[:1])
    csv = {"content-type": "text/csv"}
    with running_gateway(endpoints(server), tmp_path) as gateway:
        port = gateway.url.rpartition(":")[2]
        for path in ("/endpoints/abalone-sl/invocations", "/readyz", "/metrics", "/"):
            refused = httpx.post(f"{gateway.url}{path}", content=body,
                                 headers={**csv, "host": f"attacker.example:{port}"})  # fmt: skip
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["__type"] == "AccessDeniedException"
            assert "'attacker.example:" in refused.json()["message"]
            assert "loopback" in refused.json()["message"]
        cross_site = httpx.post(f"{gateway.url}/endpoints/abalone-sl/invocations", content=body,
                                headers={"content-type": "text/plain",
                                         "origin": "https://attacker.example"})  # fmt: skip
        assert cross_site.status_code == 403, cross_site.text
        assert "'https://attacker.example'" in cross_site.json()["message"]
        for host in (f"localhost:{port}", f"127.1:{port}", "app.localhost", "LOCALHOST."):
            served = httpx.post(f"{gateway.url}/endpoints/abalone-sl/invocations", content=body,
                                headers={**csv, "host": host})  # fmt: skip
            assert served.status_code == 200, (host, served.text)
        client = boto3.client("sagemaker-runtime", endpoint_url=f"http://localhost:{port}",
                              region_name="us-east-1", aws_access_key_id="x",
                              aws_secret_access_key="x")  # fmt: skip
        answer = client.invoke_endpoint(EndpointName="abalone-sl", Body=body,
                                        ContentType="text/csv")  # fmt: skip
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_refused_requests_neither_flood_the_log_nor_forge_a_line_in_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Anyone can send unsigned requests: a hundred of them leave one log line (and a count
    with the next), and a newline in the decoded path stays escaped on that line. The line
    names the id its request was answered with (it named none, and the answer a new one)."""
    env = {"INFERMODES_GATEWAY_ACCESS_KEYS": f"{KEY_ID}:{SECRET}"}
    forged = "2026-01-01 00:00:00,000 CRITICAL infermodes.gateway: forged"
    with running_gateway(endpoints(server), tmp_path, env=env) as gateway:
        first = httpx.post(f"{gateway.url}/endpoints/x%0A{forged}/invocations", content=b"1")
        assert first.status_code == 403, first.text
        for _ in range(100):
            response = httpx.post(f"{gateway.url}/endpoints/abalone-sl/invocations", content=b"1")
            assert response.status_code == 403, response.text
        assert httpx.get(f"{gateway.url}/readyz").status_code == 200  # the log is written
        lines = gateway.log.splitlines()
    refusals = [line for line in lines if " refused POST " in line]
    assert len(refusals) == 1, refusals[:5]
    assert "/endpoints/x\\n2026-01-01" in refusals[0]
    assert f"(request {first.headers['x-amzn-requestid']})" in refusals[0], refusals[0]
    assert not any(line.startswith(forged[:23]) for line in lines)
