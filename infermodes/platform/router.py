"""The platform's control plane over its JSON 1.1 protocol: ``POST /`` with
``X-Amz-Target: SageMaker.<Operation>``, a JSON body in and out, errors as
``{"__type": <code>, "message": ...}`` with the code in ``x-amzn-ErrorType`` too (HTTP 400 for a
caller's mistake), so boto3's ``sagemaker`` client, its waiters and its ``ClientError`` codes
work unchanged. The state lives behind a ``PlatformStore`` (one per actuator)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from infermodes.errors import UnsupportedContentType
from infermodes.http import refuse_codings, request_id
from infermodes.platform.errors import (
    CONTENT_TYPE,
    ERROR_TYPE_HEADER,
    ApiError,
    ResourceLimitExceeded,
    SerializationException,
    ServiceUnavailable,
    ThrottlingException,
    UnknownOperationException,
    ValidationException,
)
from infermodes.platform.operations import ControlPlane
from infermodes.platform.store import (
    JsonObject,
    LimitExceeded,
    PlatformStore,
    Refused,
    Throttled,
    Unavailable,
)
from infermodes.platform.translate import Defaults

log = logging.getLogger("infermodes.platform")

TARGET_PREFIX = "SageMaker."
MAX_REQUEST_BYTES = 1024 * 1024


class InternalFailure(ApiError):
    """A failure of ours (the store's), answered 500 so boto3 retries it."""

    status_code = 500


def answer(payload: JsonObject, named: str, status: int = 200, code: str | None = None) -> Response:
    """``named``: the request's id (``x-amzn-RequestId``), which its log lines name too."""
    headers = {"x-amzn-RequestId": named}
    if code is not None:
        headers[ERROR_TYPE_HEADER] = code
    return Response(json.dumps(payload).encode(), status, headers, media_type=CONTENT_TYPE)


def error_answer(exc: ApiError, named: str) -> Response:
    return answer({"__type": exc.code, "message": str(exc)}, named, exc.status_code, exc.code)


async def bounded_body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise ValidationException(f"request body over {MAX_REQUEST_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse_request(body: bytes) -> JsonObject:
    """A JSON object of finite numbers and Unicode strings (Python's parser reads NaN,
    Infinity and lone surrogates such as ``"\\ud800"``: answered back they are not JSON, and
    the Kubernetes API would replace the surrogate in what it keeps)."""
    try:
        parsed = json.loads(body or b"{}", parse_float=finite, parse_constant=no_constant)
        json.dumps(parsed, ensure_ascii=False).encode()  # UnicodeEncodeError: a lone surrogate
    except ValueError as exc:  # UnicodeEncodeError is one
        raise SerializationException(f"the body is not JSON: {str(exc)[:200]}") from None
    except RecursionError:  # the parser recurses per level: a megabyte of "[" is past its depth
        raise SerializationException("the body nests deeper than the parser reads") from None
    if not isinstance(parsed, dict):
        raise SerializationException("the body must be a JSON object")
    return parsed


def create_router(store: PlatformStore, defaults: Defaults) -> APIRouter:
    """Signatures are checked before a request gets here (``gateway/auth.py``)."""
    plane = ControlPlane(store, defaults)
    operations: dict[str, Callable[[JsonObject], Awaitable[JsonObject]]] = plane.operations()
    router = APIRouter()

    @router.post("/")
    async def control_plane(request: Request) -> Response:
        named = request_id(request.scope)
        try:
            try:
                refuse_codings(request.scope["headers"])  # a body read as sent, or not at all
            except UnsupportedContentType as exc:
                raise SerializationException(str(exc)) from None
            targets = request.headers.getlist("x-amz-target")
            if len(targets) > 1:  # which one the caller meant is not guessed
                raise ValidationException(
                    f"X-Amz-Target given {len(targets)} times: one operation per request"
                )
            body = await bounded_body(request)
            target = request.headers.get("x-amz-target", "")
            operation = target.removeprefix(TARGET_PREFIX)
            run = operations.get(operation) if target.startswith(TARGET_PREFIX) else None
            if run is None:
                raise UnknownOperationException(
                    f"X-Amz-Target {target[:100]!r}: infermodes serves {TARGET_PREFIX}<one of "
                    f"{', '.join(sorted(operations))}>"
                )
            result: Any = await run(parse_request(body))
            return answer(result, named)
        except ApiError as exc:
            return error_answer(exc, named)
        except LimitExceeded as exc:  # the cluster's quota, as the platform's own limits
            return error_answer(ResourceLimitExceeded(str(exc)), named)
        except Refused as exc:  # a policy or a lasting conflict: the caller can act on it
            return error_answer(ValidationException(str(exc)), named)
        except Throttled as exc:  # the platform's code for "slow down", which boto3 retries
            return error_answer(ThrottlingException(str(exc)), named)
        except Unavailable as exc:  # a moment's failure: 503, which boto3 retries, not a 500
            log.warning("control plane request %s: %s", named, exc)
            return error_answer(ServiceUnavailable(str(exc)), named)
        except Exception:
            log.exception("control plane request %s failed", named)
            return error_answer(InternalFailure("internal failure; the log has details"), named)

    return router
