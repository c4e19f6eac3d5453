"""Asynchronous invocations as data: the queue message, the decision taken on each delivery,
and how a failure is classified. No I/O here, so every rule is a unit test away.

The broker's delivery count is the attempt counter: a worker crash, a broker restart and a
transient failure (requeued on purpose) all raise it, so "N attempts" means the same thing
whatever went wrong, and it survives the worker that counted.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from infermodes.errors import InfermodesError, InvocationTimeout, ObjectNotFound, StorageError
from infermodes.queueing.broker import delivery_limit
from infermodes.settings import MAX_INVOCATION_TIMEOUT_SECONDS
from infermodes.storage import NotAFile

DEFAULT_TTL_SECONDS = 6 * 3600
MAX_TTL_SECONDS = 6 * 3600
INFERENCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# outcomes counted by WorkerMetrics.messages
Outcome = Literal["success", "error", "expired", "retried", "dead_lettered", "abandoned",
                  "duplicate", "foreign"]  # fmt: skip
GAVE_UP = "AttemptsExhausted"  # the failure reason of a request that ends in the dead-letter queue
# the failure reason of a claimed success that no delivery could store (see Step.ABANDON)
OUTPUT_NOT_STORED = "OutputNotStored"


class InvocationRequest(BaseModel):
    """The queue message: a reference to the input and where the result goes; never the
    payload itself. Unknown fields are ignored so that a newer publisher does not poison an
    older worker.

    ``input_root``: the prefix the accepting side allowed a ``file://`` input under; the worker
    holds the file it actually opens to it, so a symbolic link cannot lead elsewhere.
    ``inline_input``: the input is the body the accepting side stored, removed once the
    request has its result (a by-reference input is the caller's and never touched).
    ``claim_location``: where a worker claims the request's one result before storing it
    (``SUCCESS_CLAIM`` or the error record): two copies of a request (a caller's retry queued
    while the first still runs, a redelivery after a lost connection) never leave both an
    output and an error. None (a message from an older publisher): no claim.
    ``namespace``: the Kubernetes namespace of the endpoint that accepted it (None outside
    Kubernetes): a queue outlives its endpoint and is named after the endpoint alone, so a
    worker of a same-named endpoint in another namespace must not process it."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    inference_id: str = Field(pattern=INFERENCE_ID.pattern)
    endpoint: str
    input_location: str
    output_location: str
    failure_location: str
    content_type: str
    accept: str
    custom_attributes: str | None = None
    accepted_at: float
    expires_at: float
    invocation_timeout_seconds: int = Field(ge=1, le=MAX_INVOCATION_TIMEOUT_SECONDS)
    input_root: str | None = None
    inline_input: bool = False
    claim_location: str | None = None
    namespace: str | None = None

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class _Salvage(BaseModel):
    """What can still be read from a message that is not a valid request."""

    model_config = ConfigDict(alias_generator=to_camel, extra="ignore")

    inference_id: str | None = None
    endpoint: str | None = None
    failure_location: str | None = None
    namespace: str | None = None


class MalformedMessage(Exception):
    """The message is not a request this worker understands; ``salvage`` has the fields that
    could be read, so the error can still be reported where the request expects it."""

    def __init__(self, reason: str, salvage: _Salvage) -> None:
        super().__init__(reason)
        self.salvage = salvage


def parse_request(body: bytes) -> InvocationRequest:
    try:
        return InvocationRequest.model_validate_json(body)
    except ValidationError as exc:
        reason = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}"
            for err in exc.errors()
        )
        salvage = _Salvage()
        try:
            document = json.loads(body)
            if isinstance(document, dict):
                salvage = _Salvage.model_validate(
                    {k: v for k, v in document.items() if isinstance(v, str)}
                )
        except ValueError:
            pass
        raise MalformedMessage(f"malformed queue message: {reason}", salvage) from None


def new_inference_id() -> str:
    return str(uuid.uuid4())


class Step(StrEnum):
    """What a worker does with one delivery."""

    PROCESS = "process"
    RESEND_SUCCESS = "resend_success"  # output exists: a redelivery; notify again, ack
    RESEND_ERROR = "resend_error"  # error object exists: likewise
    GIVE_UP = "give_up"  # attempts exhausted: error object, error notification, dead-letter
    EXPIRE = "expire"  # the request's TTL passed before processing
    # a success claimed but never stored, still unfinished on the queue's last two
    # deliveries: error notification, dead-letter, no error object (it would contradict it)
    ABANDON = "abandon"


def plan(
    *,
    output_exists: bool,
    error_exists: bool,
    delivery_count: int,
    max_attempts: int,
    now: float,
    expires_at: float,
    success_claimed: bool = False,
) -> Step:
    """Decide from what is already stored and how often the message came: existing results win
    (exactly one output per request), then a success claimed but not stored (its worker died
    storing it, or could not store it: finish it, whatever the budget and TTL, until the
    queue's last two deliveries), then the attempt budget, then the TTL."""
    if output_exists:
        return Step.RESEND_SUCCESS
    if error_exists:
        return Step.RESEND_ERROR
    if success_claimed:
        return Step.ABANDON if last_resort(delivery_count, max_attempts) else Step.PROCESS
    if delivery_count >= max_attempts:
        return Step.GIVE_UP
    if now > expires_at:
        return Step.EXPIRE
    return Step.PROCESS


def last_resort(delivery_count: int, max_attempts: int) -> bool:
    """Whether a delivery is among the queue's last two, where a worker ends the message
    itself, said in a notification, whatever is missing: the embedded queue makes
    ``delivery_limit`` deliveries (RabbitMQ one more), and one is kept for a notification
    that could not go out."""
    return delivery_count >= delivery_limit(max_attempts) - 2


@dataclass(frozen=True)
class Failure:
    """``retry``: requeue (the next attempt may succeed); otherwise the request is finished
    with an error object."""

    reason: str
    message: str
    retry: bool


# storage that fails for a while (unreachable, a 5xx, a timeout): a worker waits it out in
# place for a time (``storage_wait_seconds``) before it spends one of the request's attempts
STORAGE_UNAVAILABLE = "StorageUnavailable"


def classify(exc: BaseException) -> Failure:
    """Permanent: the request itself is wrong (4xx-like errors, a missing input, an input that
    is a directory, a timeout).
    Retryable: storage trouble and anything unexpected, which may be a crash that another
    attempt survives; the attempt budget bounds it."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, ObjectNotFound):
        return Failure("InputNotFound", message, retry=False)
    if isinstance(exc, InvocationTimeout):
        return Failure("InvocationTimeout", message, retry=False)
    if isinstance(exc, NotAFile):
        return Failure("InvalidInput", message, retry=False)
    if isinstance(exc, InfermodesError) and 400 <= exc.status_code < 500:
        return Failure(type(exc).__name__, message, retry=False)
    if isinstance(exc, StorageError):
        return Failure(STORAGE_UNAVAILABLE, message, retry=True)
    return Failure("ProcessingFailed", f"{type(exc).__name__}: {message}", retry=True)


def retry_delay(delivery_count: int, base: float, cap: float) -> float:
    """Exponential backoff before a requeue: base, 2 base, 4 base, ... at most ``cap``."""
    return min(cap, base * math.pow(2, min(delivery_count, 30)))


# A success's result claim is empty (one exclusive create on local files, on the hot path);
# an error's holds its error record.
SUCCESS_CLAIM = b""


def claims_success(claim: bytes) -> bool:
    """Whether a result claim (``SUCCESS_CLAIM`` or an error record) is a success's."""
    return claim == SUCCESS_CLAIM


def error_record(
    inference_id: str | None,
    failure: Failure,
    *,
    attempts: int,
    input_location: str | None,
    failed_at: float,
) -> bytes:
    """The content of ``<failurePath>/<inferenceId>.error``."""
    return json.dumps(
        {
            "inferenceId": inference_id,
            "status": "Failed",
            "reason": failure.reason,
            "message": failure.message,
            "attempts": attempts,
            "inputLocation": input_location,
            "failedAt": failed_at,
        },
        indent=1,
    ).encode()
