"""AWS Signature Version 4, verified as the managed platform verifies it, so boto3's clients sign
their requests to infermodes unchanged. The canonical request is rebuilt exactly as botocore's
``SigV4Auth`` builds it (path with dot segments and repeated slashes removed, then quoted again;
query pairs sorted as sent; the signed headers lower-cased, values trimmed; the sha256 of the
body), the signing key derived from the secret of the ``Credential``'s access key id and the
signatures compared in constant time. The request date must be within five minutes of now, and
every X-Amz-*/X-Amzn-* header (but the trace id) must be signed, as botocore signs them.

Pure: the caller hands in the request's parts and the body's sha256. Verification comes in two
steps so a request whose headers already fail (no signature, unknown key, expired) is refused
before its body is read. Secrets appear in no message and no log line.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from infermodes.errors import InfermodesError
from infermodes.http import REQUEST_ID_HEADER, new_request_id

ALGORITHM = "AWS4-HMAC-SHA256"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
SERVICE = "sagemaker"  # the signing name of both the control plane and the runtime (boto3)
MAX_SKEW_SECONDS = 300
ERROR_TYPE_HEADER = b"x-amzn-errortype"
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-fA-F]+)\s*$"
)
ACCESS_KEY_ID = re.compile(r"[A-Za-z0-9_+=,.@-]{1,128}")
TIMESTAMP = re.compile(r"[0-9]{8}T[0-9]{6}Z")


class AuthError(InfermodesError):
    """A request the platform would refuse before it is routed; the class name is its code."""

    status_code = 403


class MissingAuthenticationTokenException(AuthError):
    pass


class IncompleteSignatureException(AuthError):
    """The Authorization header or the date is malformed (the platform answers 400)."""

    status_code = 400


class UnrecognizedClientException(AuthError):
    pass


class InvalidSignatureException(AuthError):
    pass


def parse_keys(text: str) -> dict[str, str]:
    """Access keys from ``<id>:<secret>`` entries separated by commas or newlines (the gateway's
    ``access_keys`` setting). Messages name entries by position, never by content."""
    keys: dict[str, str] = {}
    entries = [e.strip() for e in text.replace("\n", ",").split(",") if e.strip()]
    for index, entry in enumerate(entries, 1):
        key_id, _, secret = entry.partition(":")
        if not ACCESS_KEY_ID.fullmatch(key_id) or not secret:
            raise ValueError(
                f"access key entry {index} must be <access key id>:<secret access key> (an id "
                "of letters, digits and _+=,.@- and a non-empty secret)"
            )
        if key_id in keys:
            raise ValueError(f"access key entry {index} repeats an access key id")
        keys[key_id] = secret
    return keys


def error_response(
    exc: InfermodesError, named: str | None = None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of a refusal before routing: the code (the class name) in the
    body's ``__type`` (the JSON 1.1 control plane's parser reads it) and in ``x-amzn-ErrorType``
    (the runtime's reads that); ``named``: the request's id, if its log line names one."""
    code = type(exc).__name__
    body = json.dumps({"__type": code, "message": str(exc)}).encode()
    headers = [
        (b"content-type", b"application/x-amz-json-1.1"),
        (ERROR_TYPE_HEADER, code.encode()),
        (b"content-length", str(len(body)).encode()),
        (REQUEST_ID_HEADER, (named or new_request_id()).encode()),  # as the platform's
    ]
    return exc.status_code, headers, body


def canonical_path(raw_path: str) -> str:
    """botocore's: dot segments and empty segments removed, then quoted (so the path as sent,
    already percent-encoded, is encoded twice, as every service but S3 expects)."""
    if not raw_path:
        return "/"
    kept: list[str] = []
    for segment in raw_path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    path = ("/" if raw_path.startswith("/") else "") + "/".join(kept)
    if raw_path.endswith("/") and kept:
        path += "/"
    return quote(path, safe="/~")


def canonical_query(raw_query: str) -> str:
    """botocore's for a query in the URL: pairs as sent, sorted."""
    if not raw_query:
        return ""
    pairs = sorted(pair.partition("=")[::2] for pair in raw_query.split("&"))
    return "&".join(f"{key}={value}" for key, value in pairs)


def must_be_signed(name: str) -> bool:
    """Whether a header (lower-cased) must be covered by the signature: every ``x-amz-*`` and
    ``x-amzn-*`` one, as botocore signs every header it sends but the trace id X-Ray adds. They
    choose the operation, the input, the inference id: one a signature does not cover was
    added by someone else, who could replay a captured request within its five minutes."""
    return name.startswith(("x-amz-", "x-amzn-")) and name != "x-amzn-trace-id"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.digest(key, message.encode(), "sha256")


@functools.lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The day's key of one secret, region and service (kept: a client signs every request of
    the day with the same one)."""
    key = _hmac(f"AWS4{secret}".encode(), date)
    return _hmac(_hmac(_hmac(key, region), service), "aws4_request")


def _epoch(timestamp: str) -> int:
    """Seconds since the epoch of a ``YYYYMMDDTHHMMSSZ`` timestamp (ValueError if it is not)."""
    if not TIMESTAMP.fullmatch(timestamp):
        raise ValueError(timestamp)
    t = timestamp
    fields = (int(t[0:4]), int(t[4:6]), int(t[6:8]), int(t[9:11]), int(t[11:13]), int(t[13:15]))
    if not (1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and fields[3] < 24 and fields[4] < 60):
        raise ValueError(timestamp)
    return calendar.timegm(fields)


@dataclass(frozen=True)
class Request:
    """What of an HTTP request the signature covers (the body by its hash, given later)."""

    method: str
    raw_path: str  # percent-encoded, as on the wire, without the query
    raw_query: str
    headers: Mapping[str, list[str]]  # by lower-cased name, repeated names' values in order

    def values(self, name: str) -> list[str]:
        return self.headers.get(name) or []


@dataclass(frozen=True)
class Pending:
    """A request whose headers passed; ``finish`` checks the signature over the body."""

    request: Request
    access_key: str
    scope: str
    timestamp: str
    signed: tuple[str, ...]
    signature: str
    key: bytes

    def canonical_request(self, payload_sha256: str) -> str:
        request = self.request
        headers = "".join(
            f"{name}:{','.join(' '.join(v.split()) for v in request.values(name))}\n"
            for name in self.signed
        )
        return "\n".join(
            [
                request.method.upper(),
                canonical_path(request.raw_path),
                canonical_query(request.raw_query),
                headers,
                ";".join(self.signed),
                payload_sha256,
            ]
        )

    def finish(self, payload_sha256: str) -> str:
        """The access key id, if the signature is right over a body of this sha256 (hex)."""
        declared = self.request.values("x-amz-content-sha256")
        if declared and declared[0] != payload_sha256:
            raise InvalidSignatureException(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
            )
        canonical = self.canonical_request(payload_sha256)
        string_to_sign = "\n".join(
            [ALGORITHM, self.timestamp, self.scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        expected = hmac.new(self.key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self.signature.lower()):
            raise InvalidSignatureException(
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method."
            )
        return self.access_key


class Verifier:
    """Verifies requests against a set of access keys (id -> secret): fixed, or what a
    callable answers at each request (keys that change while the gateway runs)."""

    def __init__(
        self,
        keys: Mapping[str, str] | Callable[[], Mapping[str, str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not callable(keys) and not keys:
            raise ValueError("a verifier needs at least one access key")
        fixed = {} if callable(keys) else dict(keys)
        self._keys: Callable[[], Mapping[str, str]] = keys if callable(keys) else lambda: fixed
        self._clock = clock

    def begin(
        self, method: str, raw_path: str, raw_query: str, headers: Iterable[tuple[str, str]]
    ) -> Pending:
        """Checks what the headers alone decide: a signature is there and well formed, its key
        is known, its date is near now and its scope is the date's and the platform's service
        (``SERVICE``; any region: the gateway has none of its own)."""
        by_name: dict[str, list[str]] = {}
        for key, value in headers:
            by_name.setdefault(key.lower(), []).append(value)
        request = Request(method, raw_path, raw_query, by_name)
        authorization = request.values("authorization")
        if not authorization:
            raise MissingAuthenticationTokenException("Missing Authentication Token")
        if not authorization[0].startswith(ALGORITHM + " "):
            raise IncompleteSignatureException(
                f"Authorization header must use {ALGORITHM} (AWS Signature Version 4)"
            )
        match = AUTHORIZATION.match(authorization[0])
        if match is None:
            raise IncompleteSignatureException(
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                "parameters, separated by commas"
            )
        parts = match["credential"].split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or not ACCESS_KEY_ID.fullmatch(parts[0]):
            raise IncompleteSignatureException(
                "Credential must have the form <access key id>/<date>/<region>/<service>/"
                "aws4_request"
            )
        access_key, date, region, service, _ = parts
        secret = self._keys().get(access_key)
        if secret is None:
            raise UnrecognizedClientException(
                "The security token included in the request is invalid."
            )
        if service != SERVICE:  # a signature for another service is not one for this API
            raise InvalidSignatureException(
                f"Credential should be scoped to correct service: {SERVICE!r}, not {service[:64]!r}"
            )
        timestamp = self._timestamp(request)
        if date != timestamp[:8]:
            raise InvalidSignatureException(
                f"Credential should be scoped to a valid date, not {date!r}: the request is "
                f"dated {timestamp[:8]}"
            )
        signed = tuple(match["signed"].split(";"))
        if "host" not in signed or list(signed) != sorted(set(signed)):
            raise IncompleteSignatureException(
                "SignedHeaders must be sorted, lower-case and include 'host'"
            )
        missing = [name for name in signed if not request.values(name)]
        if missing:
            raise InvalidSignatureException(f"signed headers not in the request: {missing}")
        unsigned = [name for name in by_name if must_be_signed(name) and name not in signed]
        if unsigned:
            raise InvalidSignatureException(
                f"headers must be signed: {sorted(unsigned)[:8]} (every X-Amz-* and X-Amzn-* "
                "header of a request but X-Amzn-Trace-Id is in its SignedHeaders)"
            )
        return Pending(
            request,
            access_key,
            f"{date}/{region}/{service}/aws4_request",
            timestamp,
            signed,
            match["signature"],
            signing_key(secret, date, region, service),
        )

    def _timestamp(self, request: Request) -> str:
        """``X-Amz-Date``, checked against the clock within ``MAX_SKEW_SECONDS``."""
        dates = request.values("x-amz-date")
        if not dates:
            raise IncompleteSignatureException(
                "Authorization header requires existence of an 'X-Amz-Date' header"
            )
        timestamp = dates[0].strip()
        try:
            signed_at = _epoch(timestamp)
        except ValueError:
            raise IncompleteSignatureException(
                f"X-Amz-Date must have the form YYYYMMDDTHHMMSSZ, not {timestamp[:32]!r}"
            ) from None
        now = self._clock()
        if abs(now - signed_at) > MAX_SKEW_SECONDS:
            stamp = time.strftime(TIMESTAMP_FORMAT, time.gmtime(now))
            relation = "earlier" if signed_at < now else "later"
            bound = time.strftime(
                TIMESTAMP_FORMAT,
                time.gmtime(now - MAX_SKEW_SECONDS if signed_at < now else now + MAX_SKEW_SECONDS),
            )
            sign = "-" if signed_at < now else "+"
            raise InvalidSignatureException(
                f"Signature expired: {timestamp} is now {relation} than {bound} "
                f"({stamp} {sign} 5 min.)"
            )
        return timestamp
