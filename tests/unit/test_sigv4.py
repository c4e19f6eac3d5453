"""SigV4 verification against requests signed by botocore's own signer: what boto3 sends is
accepted, anything changed after signing, a wrong secret, an unknown key or a stale date is
refused with the platform's code."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from infermodes.platform.sigv4 import (
    AuthError,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
    Verifier,
    canonical_path,
    error_response,
    parse_keys,
)

KEY_ID, SECRET = "AKIAINFERMODESTEST01", "s3cr3t/with+chars=="
URL = "http://127.0.0.1:8090/endpoints/Abalone-Serverless/invocations"
BODY = b"M,0.455,0.365,0.095,0.514,0.2245,0.101,0.15\n"


def signed(
    url: str = URL,
    body: bytes = BODY,
    secret: str = SECRET,
    key_id: str = KEY_ID,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    service: str = "sagemaker",
    region: str = "us-east-1",
) -> AWSRequest:
    request = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers={"Content-Type": "text/csv", "Accept": "text/csv", **(headers or {})},
    )
    SigV4Auth(Credentials(key_id, secret), service, region).add_auth(request)
    return request


def wire(request: AWSRequest) -> tuple[str, str, str, list[tuple[str, str]], str]:
    """The request as a server receives it: the Host header the HTTP client adds, the path and
    query as sent, the body by its sha256."""
    parts = urlsplit(request.url)
    headers = [(k, v) for k, v in request.headers.items()] + [("Host", parts.netloc)]
    body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
    return request.method, parts.path, parts.query, headers, hashlib.sha256(body).hexdigest()


def verify(request: AWSRequest, clock: float | None = None) -> str:
    method, path, query, headers, digest = wire(request)
    verifier = Verifier({KEY_ID: SECRET, "AKIAOTHER": "other"}, lambda: clock or time.time())
    return verifier.begin(method, path, query, headers).finish(digest)


def test_a_request_signed_by_botocore_is_accepted() -> None:
    assert verify(signed()) == KEY_ID


def test_paths_queries_and_empty_bodies_are_canonicalised_as_botocore_does() -> None:
    assert verify(signed("http://localhost:8090/a/./b//c/../endpoint%20x/?b=2&a=1&a=0", b"")) == (
        KEY_ID
    )
    assert verify(signed("http://127.0.0.1:8090/", b"{}", headers={"X-Amz-Target": "S.Op"}))
    assert canonical_path("/endpoints/a%2Fb/invocations") == "/endpoints/a%252Fb/invocations"


def test_a_wrong_secret_is_an_invalid_signature() -> None:
    with pytest.raises(InvalidSignatureException, match="does not match"):
        verify(signed(secret="not-the-secret"))


def test_a_tampered_body_is_an_invalid_signature() -> None:
    request = signed()
    request.data = BODY.replace(b"0.455", b"0.999")
    with pytest.raises(InvalidSignatureException):
        verify(request)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: setattr(r, "url", r.url.replace("Abalone-Serverless", "abalone-serverless")),
        lambda r: setattr(r, "url", r.url + "?extra=1"),
        lambda r: setattr(r, "method", "PUT"),
        lambda r: r.headers.replace_header("Content-Type", "application/json"),
        lambda r: r.headers.replace_header("X-Amz-Target", "SageMaker.DeleteEndpoint"),
    ],
    ids=["path", "query", "method", "content-type", "target"],
)
def test_a_tampered_path_query_method_or_signed_header_is_an_invalid_signature(
    tamper: object,
) -> None:
    request = signed(headers={"X-Amz-Target": "SageMaker.DescribeEndpoint"})
    tamper(request)  # type: ignore[operator]
    with pytest.raises(InvalidSignatureException):
        verify(request)


def test_a_signature_for_another_service_is_refused_and_any_region_is_accepted() -> None:
    """The same key signing for S3 (or anything else) has not signed a request to this API."""
    for service in ("s3", "sagemaker-runtime", "SageMaker"):
        with pytest.raises(InvalidSignatureException, match="scoped to correct service"):
            verify(signed(service=service))
    assert verify(signed(region="eu-west-3")) == KEY_ID


def test_an_unsigned_header_may_change() -> None:
    request = signed()
    request.headers["User-Agent"] = "something else"  # botocore never signs it
    assert verify(request) == KEY_ID


@pytest.mark.parametrize(
    "header",
    ["X-Amzn-SageMaker-InputLocation", "X-Amzn-SageMaker-InferenceId", "X-Amz-Target",
     "X-Amzn-SageMaker-Custom-Attributes"],
)  # fmt: skip
def test_an_amz_header_added_after_signing_is_refused(header: str) -> None:
    """botocore signs every X-Amz-* and X-Amzn-* header it sends (but the trace id): one the
    signature does not cover was added by someone else, who would replay a captured request
    within its five minutes to another object, id or operation."""
    request = signed()
    request.headers[header] = "s3://other/object"
    with pytest.raises(InvalidSignatureException, match=header.lower()):
        verify(request)


def test_the_trace_id_botocore_never_signs_may_be_added() -> None:
    request = signed()
    request.headers["X-Amzn-Trace-Id"] = "Root=1-5759e988-bd862e3fe1be46a994272793"
    assert verify(request) == KEY_ID


def test_a_stale_or_future_date_is_a_signature_expired() -> None:
    request = signed()
    with pytest.raises(InvalidSignatureException, match="Signature expired: .* is now earlier"):
        verify(request, clock=time.time() + 6 * 60)
    with pytest.raises(InvalidSignatureException, match="Signature expired: .* is now later"):
        verify(request, clock=time.time() - 6 * 60)
    assert verify(request, clock=time.time() + 4 * 60) == KEY_ID


def test_an_unknown_key_is_an_unrecognized_client_and_no_secret_is_in_any_message() -> None:
    with pytest.raises(UnrecognizedClientException) as caught:
        verify(signed(key_id="AKIAUNKNOWN", secret=SECRET))
    with pytest.raises(AuthError) as wrong:
        verify(signed(secret="guess"))
    for exc in (caught.value, wrong.value):
        assert SECRET not in str(exc) and "guess" not in str(exc)


def test_a_missing_or_malformed_authorization_is_refused_with_its_code() -> None:
    method, path, query, headers, _ = wire(signed())
    verifier = Verifier({KEY_ID: SECRET})
    unsigned = [(k, v) for k, v in headers if k.lower() != "authorization"]
    with pytest.raises(MissingAuthenticationTokenException):
        verifier.begin(method, path, query, unsigned)
    for authorization in (
        "Bearer abc",
        "AWS4-HMAC-SHA256 Credential=x",
        f"AWS4-HMAC-SHA256 Credential={KEY_ID}/2026/us-east-1/sagemaker, SignedHeaders=host, "
        "Signature=00",
    ):
        with pytest.raises(IncompleteSignatureException):
            verifier.begin(method, path, query, [*unsigned, ("Authorization", authorization)])
    undated = [(k, v) for k, v in headers if k.lower() != "x-amz-date"]
    with pytest.raises(IncompleteSignatureException, match="X-Amz-Date"):
        verifier.begin(method, path, query, undated)
    for bad_date in ("2026-12-02T00:00:00Z", "20261302T000000Z", "20261202T250000Z"):
        with pytest.raises(IncompleteSignatureException, match="YYYYMMDDTHHMMSSZ"):
            verifier.begin(method, path, query, [*undated, ("X-Amz-Date", bad_date)])


def test_a_content_sha256_header_must_be_the_bodys() -> None:
    request = signed(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    with pytest.raises(InvalidSignatureException, match="x-amz-content-sha256"):
        verify(request)


def test_refusals_carry_the_code_where_both_of_botocores_parsers_read_it() -> None:
    status, headers, body = error_response(UnrecognizedClientException("no"))
    assert status == 403
    assert (b"x-amzn-errortype", b"UnrecognizedClientException") in headers
    assert b'"__type": "UnrecognizedClientException"' in body


def test_access_keys_parse_from_the_setting_and_bad_entries_name_no_secret() -> None:
    assert parse_keys(f"{KEY_ID}:{SECRET},\n AKIATWO:two:with:colons \n") == {
        KEY_ID: SECRET,
        "AKIATWO": "two:with:colons",
    }
    assert parse_keys("") == {}
    for bad in ("AKIAONLY", "bad id:secret", f"{KEY_ID}:{SECRET},{KEY_ID}:again"):
        with pytest.raises(ValueError, match="entry") as caught:
            parse_keys(bad)
        assert SECRET not in str(caught.value) and "again" not in str(caught.value)
