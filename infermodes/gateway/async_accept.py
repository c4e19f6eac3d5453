"""Accepting async invocations: ``POST /endpoints/{name}/async-invocations``.

Shaped like the managed platform's InvokeEndpointAsync, so its clients can call it: the input
by reference (``X-Amzn-SageMaker-InputLocation``) or inline in the body (stored to the
endpoint's input prefix first), and a 202 with the inference id and the output and failure
locations. The 202 is sent only after the broker confirmed the persistent message; a broker
that is down gets the client a 503, never a 202 for a request that was not stored, and a
refused request leaves nothing behind.

The inference id is the caller's idempotency key: it names one request. Its first acceptance
creates a request record ``<inputPath>/<id>.request`` (atomically: of two concurrent requests
with one id, exactly one creates it); the same request again gets the same 202, a different
one under a used id a 409.

Header values are read as UTF-8 (ASCII, all the platform allows, is a subset); a value that is
not UTF-8 is a 400 naming the header.

``create_router`` is what the gateway mounts; ``create_app`` and ``serve`` run it on its own.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import Scope

from infermodes.endpoints.spec import object_name
from infermodes.errors import (
    EndpointNotFound,
    InfermodesError,
    InputNotAllowed,
    InvalidInput,
    ObjectNotFound,
    StorageError,
    clipped,
)
from infermodes.gateway.async_retention import (
    CLAIM_SUFFIX,
    INLINE_SUFFIX,
    RECORD_SUFFIX,
    Sweeper,
    own_suffix,
)
from infermodes.gateway.auth import refusal_log
from infermodes.gateway.errors import (
    CUSTOM_ATTRIBUTES,
    AnsweringFailures,
    ProtocolRefusals,
    custom_attributes_problem,
    internal_failure_response,
    refusal_code,
    runtime_error_response,
)
from infermodes.http import (
    RequestNaming,
    create_api,
    expects_continue,
    read_body,
    refuse_codings,
    repeated_header,
    request_id,
    uvicorn_options,
)
from infermodes.logs import ThrottledPer, configure_logging
from infermodes.metrics import ROUTE, UNKNOWN_ENDPOINT, AsyncApiMetrics, async_api_answers
from infermodes.predict import codecs
from infermodes.queueing.broker import Enqueuer
from infermodes.queueing.messages import (
    DEFAULT_TTL_SECONDS,
    INFERENCE_ID,
    MAX_TTL_SECONDS,
    InvocationRequest,
    new_inference_id,
)
from infermodes.queueing.rabbitmq import RequestPublisher
from infermodes.settings import (
    MAX_INVOCATION_TIMEOUT_SECONDS,
    AsyncApiSettings,
    AsyncEndpoint,
    warn_of_unknown_variables,
)
from infermodes.storage import (
    Storage,
    StorageRefused,
    UnusableLocation,
    dotted,
    file_in_the_way,
    folder_uri,
    join_uri,
    lies_under,
    normalised,
    prefix_base,
    resolved,
)

log = logging.getLogger("infermodes.async_api")

INPUT_LOCATION = "X-Amzn-SageMaker-InputLocation"
REQUEST_TTL = "X-Amzn-SageMaker-RequestTTLSeconds"
INVOCATION_TIMEOUT = "X-Amzn-SageMaker-InvocationTimeoutSeconds"
INFERENCE_ID_HEADER = "X-Amzn-SageMaker-Inference-Id"
OUTPUT_LOCATION = "X-Amzn-SageMaker-OutputLocation"
FAILURE_LOCATION = "X-Amzn-SageMaker-FailureLocation"
# boto3 sends InvokeEndpointAsync's ContentType and Accept in these, not in Content-Type/Accept
CONTENT_TYPE = "X-Amzn-SageMaker-Content-Type"
ACCEPT = "X-Amzn-SageMaker-Accept"
# the platform's output naming; refused rather than ignored: outputs go to OutputLocation
UNSUPPORTED = ("X-Amzn-SageMaker-S3OutputPathExtension", "X-Amzn-SageMaker-Filename")
RECORD_LIMIT = 64 * 1024
BOTH_INPUTS = f"send the input inline or by {INPUT_LOCATION}, not both"


class InferenceIdInUse(InfermodesError):
    """The inference id already names a different request."""

    status_code = 409


class StorageUnavailable(InfermodesError):
    """Storage failed while accepting: nothing was queued, the caller may retry."""

    status_code = 503


class StorageUnusable(InfermodesError):
    """The endpoint's storage refuses what accepting needs: its input location cannot hold a
    file (a file in the way of its folder, a file system that makes no folder there), or the
    store refuses the gateway's credentials. Nothing was queued, and no retry helps until the
    endpoint's storage (or the gateway's access to it) is fixed: a 4xx, which clients do not
    retry (a 503 "retry later" or a 500 they do), 424 as the storage it depends on failed; the
    message names the location."""

    status_code = 424


# endpoints' (output, failure) paths found usable, each checked once (``check_result_folders``)
RESULT_FOLDERS_KEPT = 1024


def check_result_folders(output_path: str, failure_path: str) -> None:
    """Refuse (``StorageUnusable``) a request whose result could never be stored: a file
    stands where the endpoint's output or failure folder would be. Accepted, it was lost
    silently (its error object unwritable, its FailureLocation never there). It raises,
    so a cache of it keeps only usable verdicts: a mended file system is seen at once."""
    fields = (("output path (S3OutputPath; outputPath in a manifest)", output_path, "results"),
              ("failure path (S3FailurePath; failurePath in a manifest)", failure_path,
               "error objects"))  # fmt: skip
    for field, path, objects in fields:
        blocker = file_in_the_way(path)
        if blocker is not None:
            raise StorageUnusable(
                f"the endpoint's {field} {path} cannot hold its {objects}: {blocker} is a "
                "file, not a folder; the request was not accepted, and a retry will not help "
                "until the endpoint's storage is fixed"
            )


def header_text(headers: Headers, name: str) -> str | None:
    """A header as the caller wrote it: HTTP carries bytes, which we read as UTF-8. One that
    takes one value, given twice, is refused: taking either would be a guess (an Accept may
    come several times: its values are one list)."""
    values = headers.getlist(name)
    if len(values) > 1 and name != "accept":
        raise InvalidInput(repeated_header(name, len(values)))
    value = ", ".join(values) if values else None  # several Accepts: one list
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{name} is not valid UTF-8") from None


def header_location(location: str) -> str:
    """A location as a response header: sent as Latin-1, as HTTP clients read headers (boto3
    among them), so a character outside printable Latin-1 (a path may hold any) is
    percent-encoded as UTF-8 rather than fail the answer; the JSON body carries it as it is."""
    return "".join(
        char
        if " " <= char <= "~" or "\xa0" <= char <= "\xff"
        else quote(char, safe="", errors="surrogatepass")
        for char in location
    )


def header_seconds(value: str | None, name: str, default: int, maximum: int) -> int:
    """A whole number of seconds in 1..maximum (ASCII digits), or ``default`` when absent."""
    if value is None:
        return default
    digits = value.strip()
    well_formed = digits.isascii() and digits.isdigit() and len(digits) <= len(str(maximum))
    if not well_formed or not 1 <= int(digits) <= maximum:
        raise InvalidInput(f"{name} must be a whole number of seconds from 1 to {maximum}")
    return int(digits)


def inference_id_of(value: str | None) -> str:
    if value is None:
        return new_inference_id()
    if not INFERENCE_ID.fullmatch(value):
        raise InvalidInput(
            f"{INFERENCE_ID_HEADER} must be 1 to 64 letters, digits, '.', '_' or '-', the "
            "first a letter or digit"
        )
    return value


def input_location_of(
    value: str,
    allowed: list[str],
    own_prefix: str,
    api_prefixes: Iterable[str] = (),
    allowed_from: str = "",
) -> tuple[str, str | None]:
    """The location, normalised, and for ``file://`` the prefix it was allowed under. A worker
    reads whatever it is pointed at, so: with ``allowed`` prefixes it must lie under one of
    them (or the endpoint's own input prefix); without them ``s3://`` may be anywhere (the
    store's own permissions govern) but ``file://`` only under the endpoint's input prefix,
    since a file path could name any of the worker's files. The worker holds the file it
    opens to that prefix, links resolved (S3 keys have no links: this check is all). Never
    the API's own objects there or in another endpoint's input prefix (``api_prefixes``):
    other callers' inline inputs and records. ``allowed_from``: the setting that adds allowed
    prefixes in this process, named in a refusal ("": it has none). A plain path is refused:
    read as one, it would name a file relative to this process's working directory."""
    if "://" not in value:
        raise InvalidInput(
            f"{INPUT_LOCATION} {clipped(value)!r} is not an s3:// or file:/// URI: give "
            "s3://bucket/key or file:///absolute/path"
        )
    try:
        ref = normalised(value)
    except StorageError as exc:
        raise InvalidInput(f"{INPUT_LOCATION}: {exc}") from None
    if not ref.key.strip("/"):  # a bucket, or the root folder
        raise InvalidInput(f"{INPUT_LOCATION} {ref.uri} names no object: name one, as bucket/key")
    if ref.key.endswith("/"):  # S3 keeps it (file paths are normalised): read, it is empty
        raise InvalidInput(
            f"{INPUT_LOCATION} {ref.uri} names a folder (its key ends in '/'): name one object "
            "in it (a batch transform job reads a folder)"
        )
    if any(_api_object(prefix, ref.uri) for prefix in (own_prefix, *api_prefixes)):
        raise InputNotAllowed(
            f"{INPUT_LOCATION} {ref.uri} is one of the API's own objects (another request's "
            "inline input or record); send your input inline or name an object of your own"
        )
    permitted = [*allowed, own_prefix] if allowed or ref.scheme == "file" else []
    if not permitted:
        return ref.uri, None
    for prefix in permitted:
        base = prefix_base(prefix)
        if lies_under(ref.uri, base):
            return ref.uri, base if ref.scheme == "file" else None
        if ref.uri == base:
            raise InvalidInput(
                f"{INPUT_LOCATION} {ref.uri} names the prefix {prefix} itself: name one object "
                "under it"
            )
    if dotted(ref.uri):
        raise InputNotAllowed(
            f"{INPUT_LOCATION} {ref.uri} has a '.' or '..' segment, which S3 keeps as written "
            "and a server may resolve, so it lies under no allowed prefix: name the object "
            "without them"
        )
    # as sent: its '..' resolved, it names a path the caller never wrote
    sent = ref.uri if value == ref.uri else f"{clipped(value)!r} (read as {ref.uri})"
    raise InputNotAllowed(
        f"{INPUT_LOCATION} {sent} is not under an allowed prefix: {', '.join(permitted)}"
        + (f" ({allowed_from} adds more)" if allowed_from else "")
    )


def _api_object(input_prefix: str, uri: str) -> bool:
    """Whether ``uri`` (normalised) is one the API keeps under an endpoint's input prefix:
    an inline input, request record or result claim (the sweep's own), or a hidden partial
    write of one."""
    base = folder_uri(input_prefix)
    if base is None:
        return False
    for name in {uri, resolved(uri)}:  # as written, and as a store may read it
        hidden = name.startswith(base) and name.removeprefix(base).startswith(".")
        if hidden or own_suffix(base, name) is not None:
            return True
    return False


@dataclass(frozen=True)
class Submission:
    """A checked request: the message to queue, the inline body to store first (None when by
    reference), and the fingerprint of everything the caller sent."""

    message: InvocationRequest
    inline: bytes | None
    fingerprint: str


def fingerprint(input_: bytes | str, *fields: object) -> str:
    """Equal for two requests only if they ask for the same work the same way."""
    digest = hashlib.sha256(input_ if isinstance(input_, bytes) else input_.encode())
    return hashlib.sha256(json.dumps([digest.hexdigest(), *fields]).encode()).hexdigest()


class Acceptor:
    """Queues each inference id's request once (runs on a worker thread: storage and the
    broker block)."""

    def __init__(self, storage: Storage, publisher: Enqueuer) -> None:
        self.storage = storage
        self.publisher = publisher

    def accept(self, endpoint: AsyncEndpoint, submission: Submission) -> InvocationRequest:
        """The request that now owns the id: this one, or the same request accepted before."""
        message = submission.message
        record = join_uri(endpoint.input_path, f"{message.inference_id}{RECORD_SUFFIX}")
        content = json.dumps(
            {"fingerprint": submission.fingerprint, "request": message.model_dump(by_alias=True)}
        ).encode()
        for _ in range(2):  # a refused first request removes its record: claim it again
            if self.storage.create(record, content):
                self._first(record, submission)
                return message
            previous = self._previous(record, submission)
            if previous is not None:
                return previous
        raise InferenceIdInUse(
            f"{INFERENCE_ID_HEADER} {message.inference_id} is being used by a concurrent "
            "request; retry"
        )

    def _first(self, record: str, submission: Submission) -> None:
        """Queue a new request; if that fails, remove everything it stored."""
        message = submission.message
        try:
            done = self._result_of(message)
            if done is not None:  # its record expired (see async_retention), its result stays
                raise InferenceIdInUse(
                    f"{INFERENCE_ID_HEADER} {message.inference_id} already has a result at "
                    f"{done}; use another id"
                )
            self._enqueue(message, submission.inline, undo=True)
        except BaseException:
            self._remove(record)
            raise

    def _previous(self, record: str, submission: Submission) -> InvocationRequest | None:
        """The request recorded under the id, if it is this same one (None: the record went
        away meanwhile). A request that has no result yet is queued again: it may be a retry
        of one whose 202 never arrived, or whose publish was lost; the worker does the work
        once and notifies each delivery."""
        inference_id = submission.message.inference_id
        try:
            stored = json.loads(self.storage.get_bytes(record, RECORD_LIMIT))
            previous = InvocationRequest.model_validate(stored["request"])
            same = stored["fingerprint"] == submission.fingerprint
        except ObjectNotFound:
            return None
        except (ValueError, KeyError, TypeError, ValidationError, StorageError) as exc:
            raise InferenceIdInUse(
                f"{INFERENCE_ID_HEADER} {inference_id} is in use (its record is unreadable: "
                f"{type(exc).__name__})"
            ) from None
        asked = submission.message
        namespaces = {previous.namespace, asked.namespace} - {None}  # None: an older gateway's
        if previous.endpoint != asked.endpoint or len(namespaces) > 1:
            # endpoints whose objects share a prefix share its ids: not a repeat of this one
            raise InferenceIdInUse(
                f"{INFERENCE_ID_HEADER} {inference_id} was already used for a request to "
                f"endpoint {previous.endpoint}, whose objects lie where this endpoint's do "
                f"(result at {previous.output_location}); use another id"
            )
        if not same:
            raise InferenceIdInUse(
                f"{INFERENCE_ID_HEADER} {inference_id} was already used for a different "
                f"request (result at {previous.output_location}); use another id"
            )
        if self._result_of(previous) is None:
            self._enqueue(previous, submission.inline, undo=False)
        return previous

    def _result_of(self, message: InvocationRequest) -> str | None:
        for location in (message.output_location, message.failure_location):
            if self.storage.exists(location):
                return location
        return None

    def _enqueue(self, message: InvocationRequest, inline: bytes | None, undo: bool) -> None:
        """Store an inline input, then queue the reference. ``undo``: a refused request
        removes the input it stored (not so a repeat, whose input is its first's)."""
        if inline is not None:
            self.storage.put_bytes(message.input_location, inline)
        try:
            self.publisher.submit(message.endpoint, message.inference_id, message.to_bytes())
        except BaseException:
            if inline is not None and undo:
                self._remove(message.input_location)
            raise

    def _remove(self, uri: str) -> None:
        try:
            self.storage.delete(uri)
        except StorageError as exc:
            log.warning("cannot remove %s (%s); the retention sweep will", uri, exc)


@dataclass(frozen=True)
class Asked:
    """What a request's headers ask for, checked: all a refusal needs but whether a body came."""

    content_type: str
    accept: str
    ttl: int
    timeout: int
    attributes: str | None
    inference_id: str
    location: str | None  # a by-reference input, checked; None: inline
    root: str | None


def asked_of(
    endpoint: AsyncEndpoint,
    headers: Headers,
    allowed_input_prefixes: list[str],
    api_prefixes: Iterable[str] = (),
    allowed_from: str = "",
) -> Asked:
    """Check every header, before the body is read: a refusal that needs no body costs no
    read of up to ``max_inline_bytes``. Raises a 4xx domain error naming the header.
    ``api_prefixes``, ``allowed_from``: see ``input_location_of``."""
    for header in UNSUPPORTED:
        if header in headers:
            raise InvalidInput(
                f"{header} is not supported: the output goes to {endpoint.output_path}"
                "/<InferenceId>.out (the response's OutputLocation)"
            )
    content_type = codecs.content_type_of(
        header_text(headers, CONTENT_TYPE) or header_text(headers, "content-type")
    )
    accept = codecs.accept_of(header_text(headers, ACCEPT) or header_text(headers, "accept"))
    ttl = header_seconds(
        header_text(headers, REQUEST_TTL), REQUEST_TTL, DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS
    )
    timeout = header_seconds(
        header_text(headers, INVOCATION_TIMEOUT),
        INVOCATION_TIMEOUT,
        endpoint.invocation_timeout_seconds,
        MAX_INVOCATION_TIMEOUT_SECONDS,
    )
    attributes = header_text(headers, CUSTOM_ATTRIBUTES)
    if attributes is not None and (too_long := custom_attributes_problem(attributes)):
        raise InvalidInput(too_long)
    inference_id = inference_id_of(header_text(headers, INFERENCE_ID_HEADER))
    location, root = header_text(headers, INPUT_LOCATION) or None, None
    declared = headers.get("content-length", "")
    if location is not None and declared.isdigit() and int(declared) > 0:
        raise InvalidInput(BOTH_INPUTS)  # said first, as for a chunked body (submission_with)
    if location is not None:
        location, root = input_location_of(
            location, allowed_input_prefixes, endpoint.input_path, api_prefixes, allowed_from
        )
    return Asked(content_type, accept, ttl, timeout, attributes, inference_id, location, root)


def submission_with(
    name: str, endpoint: AsyncEndpoint, asked: Asked, body: bytes, now: float
) -> Submission:
    """The message to queue for checked headers and the body that came with them."""
    location, inference_id = asked.location, asked.inference_id
    if location and body:
        raise InvalidInput(BOTH_INPUTS)
    if not location and not body:
        raise InvalidInput(f"no input: send a body or an {INPUT_LOCATION} header")
    message = InvocationRequest(
        inference_id=inference_id,
        endpoint=name,
        input_location=location or join_uri(endpoint.input_path, f"{inference_id}{INLINE_SUFFIX}"),
        output_location=join_uri(endpoint.output_path, f"{inference_id}.out"),
        failure_location=join_uri(endpoint.failure_path, f"{inference_id}.error"),
        content_type=asked.content_type,
        accept=asked.accept,
        custom_attributes=asked.attributes,
        accepted_at=now,
        expires_at=now + asked.ttl,
        invocation_timeout_seconds=asked.timeout,
        input_root=asked.root,
        inline_input=not location,
        claim_location=join_uri(endpoint.input_path, f"{inference_id}{CLAIM_SUFFIX}"),
        namespace=endpoint.namespace,
    )
    key = fingerprint(location or body, asked.content_type, asked.accept, asked.attributes,
                      asked.ttl, asked.timeout)  # fmt: skip
    return Submission(message, None if location else body, key)


def refused(request: Request, exc: InfermodesError) -> Response:
    """The platform's error; it closes a connection whose body may have gone unasked."""
    response = runtime_error_response(exc)
    if expects_continue(request.scope["headers"]):
        response.headers["connection"] = "close"
    return response


def create_router(
    endpoints: Mapping[str, AsyncEndpoint],
    publisher: Enqueuer,
    storage: Storage,
    metrics: AsyncApiMetrics,
    max_inline_bytes: int,
    allowed_input_prefixes: list[str],
    clock: Callable[[], float] = time.time,
    missing: Callable[[str], InfermodesError] | None = None,
    input_paths: Callable[[], Iterable[str]] | None = None,
    accepted: Callable[[str], None] | None = None,
    allowed_from: str = "",
    forgotten: list[Callable[[str], None]] | None = None,
    reread: Callable[[str, str], Awaitable[None]] | None = None,
) -> APIRouter:
    """The route; domain errors become their status, anything else a 500 that is logged and
    counted like any answer. ``missing``: the error for a name without a layout (by default
    a 404); ``input_paths``: every endpoint's input path, those without a layout too (by
    default the layouts'); ``accepted``: told the endpoint's name once its request is on the
    queue (the gateway's push to a pool at zero workers); ``allowed_from``: the setting that
    adds to ``allowed_input_prefixes``, named when a location is refused ("": none);
    ``forgotten``: where the route asks to hear of an endpoint gone (the routing table's), so
    its log throttles go with it; ``reread``: awaited with a name without a layout and the
    request's id before the name is refused (the gateway's: its watch may not have brought
    an endpoint just created)."""
    router = APIRouter()
    acceptor = Acceptor(storage, publisher)
    told = ThrottledPer(log)  # a broker or store down refuses every request alike
    results_usable = functools.lru_cache(maxsize=RESULT_FOLDERS_KEPT)(check_result_folders)
    if forgotten is not None:
        forgotten.append(told.forget)

    def api_input_paths() -> Iterator[str]:  # runs only for a by-reference input
        yield from input_paths() if input_paths else (e.input_path for e in endpoints.values())

    @router.post("/endpoints/{name}/async-invocations", status_code=202)
    async def invoke_async(name: str, request: Request) -> Response:
        name = object_name(name)
        endpoint = endpoints.get(name)
        if endpoint is None and reread is not None:
            await reread(name, request_id(request.scope))
            endpoint = endpoints.get(name)
        if endpoint is None:
            refusal = (
                missing(name)
                if missing
                else EndpointNotFound(f"no async endpoint named {clipped(name)!r}")
            )
            metrics.count(UNKNOWN_ENDPOINT, refusal.status_code)
            return refused(request, refusal)
        try:
            response = await _accept(name, endpoint, request)
        except InfermodesError as exc:
            metrics.count(name, exc.status_code)
            if exc.status_code >= 500:  # ours to explain: the line a ticket's id leads to
                named = request_id(request.scope)
                told(name).warning("request %s for %s: answered %d: %s", named, name,
                                   exc.status_code, exc, request=named)  # fmt: skip
            return refused(request, exc)
        except Exception:
            log.exception("unexpected error accepting request %s for %s",
                          request_id(request.scope), name)  # fmt: skip
            metrics.count(name, 500)
            return internal_failure_response(request.scope)
        metrics.count(name, 202)
        if accepted is not None:
            try:
                accepted(name)
            except Exception:  # the request is on the queue: telling of it is best effort
                log.exception("telling of a request accepted for %s", name)
        return response

    async def _accept(name: str, endpoint: AsyncEndpoint, request: Request) -> Response:
        refuse_codings(request.scope["headers"])  # a worker would read a gzip body as CSV
        asked = asked_of(endpoint, request.headers, allowed_input_prefixes, api_input_paths(),
                         allowed_from)  # fmt: skip
        results_usable(endpoint.output_path, endpoint.failure_path)
        body = await read_body(request.scope, request.receive, max_inline_bytes)
        checked = submission_with(name, endpoint, asked, body, clock())
        started = time.perf_counter()
        try:
            message = await run_in_threadpool(acceptor.accept, endpoint, checked)
        except (UnusableLocation, StorageRefused) as exc:  # every location is the endpoint's
            raise StorageUnusable(
                f"the endpoint's storage cannot take the request ({exc}); it was not accepted, "
                "and a retry will not help until the endpoint's storage, or the gateway's "
                "access to it, is fixed"
            ) from exc
        except StorageError as exc:
            raise StorageUnavailable(
                f"storage failed ({exc}); the request was not accepted, retry later"
            ) from exc
        metrics.enqueue_duration.observe(time.perf_counter() - started)
        return JSONResponse(
            {
                "InferenceId": message.inference_id,
                "OutputLocation": message.output_location,
                "FailureLocation": message.failure_location,
            },
            202,
            headers={
                OUTPUT_LOCATION: header_location(message.output_location),
                FAILURE_LOCATION: header_location(message.failure_location),
            },
        )

    return router


def counted_by_endpoint(scope: Scope, handlers: Collection[Callable[..., object]]) -> bool:
    """Whether one of ``handlers`` answered the request (and counted it by endpoint): routing
    matched its route, path and method (a path it serves asked with another method is
    routing's 405, answered by no handler)."""
    route = scope.get("route")
    return (
        isinstance(route, APIRoute)
        and route.endpoint in handlers
        and scope["method"] in (route.methods or ())
    )


def route_answers(
    answers: Counter, handlers: Collection[Callable[..., object]]
) -> Callable[[Scope, int], None]:
    """What ``async-api`` tells of each answer its app gave (``AnsweringFailures``): counted at
    the ``route`` stage unless one of ``handlers`` counted it by endpoint (``AsyncApiMetrics``),
    as the gateway counts its routes'; with HTTP's own refusals (``protocol``), every answer is
    then in one series: ``/ping``, ``/metrics``, routing's 404 and 405, a bug's 500."""

    def answered(scope: Scope, status: int) -> None:
        if not counted_by_endpoint(scope, handlers):
            answers.labels(ROUTE, str(status)).inc()

    return answered


def create_app(
    settings: AsyncApiSettings,
    publisher: Enqueuer,
    storage: Storage | None = None,
    registry: CollectorRegistry | None = None,
    answers: Counter | None = None,
) -> FastAPI:
    """The router on its own, with ``/ping`` and ``/metrics``; ``answers``: the process's
    ``infermodes_async_api_answers_total`` (``serve`` counts HTTP's own refusals in it too),
    made in ``registry`` when None."""
    registry = registry if registry is not None else CollectorRegistry()
    answers = answers if answers is not None else async_api_answers(registry)
    app = create_api("infermodes async invocations", registry)
    app.add_middleware(RequestNaming)  # x-amzn-RequestId, as the gateway's route answers
    router = create_router(
        settings.endpoints,
        publisher,
        storage or Storage(),
        AsyncApiMetrics(registry),
        settings.max_inline_bytes,
        settings.allowed_input_prefixes,
        allowed_from="--allow-input-prefix",
    )
    app.include_router(router)
    handlers = [route.endpoint for route in router.routes if isinstance(route, APIRoute)]
    # a bug's 500 in the platform's shape, as the gateway's; every answer counted
    app.add_middleware(AnsweringFailures, answered=route_answers(answers, handlers))

    @app.get("/ping")
    async def ping() -> Response:
        return Response(b"", 200)

    return app


def serve(settings: AsyncApiSettings) -> int:
    """Entry point of ``infermodes async-api``."""
    import uvicorn

    configure_logging(settings.log_level)
    warn_of_unknown_variables(settings)
    publisher = RequestPublisher(
        settings.broker_url,
        {name: endpoint.max_attempts for name, endpoint in settings.endpoints.items()},
        settings.publish_connections,
    )
    storage = Storage()
    registry = CollectorRegistry()
    answers = async_api_answers(registry)
    app = create_app(settings, publisher, storage, registry, answers)
    # HTTP's own refusals, before the app: counted and logged as the gateway's
    refused_by_protocol = ProtocolRefusals(answers, refusal_log(log))
    sweeper = Sweeper(storage, settings.endpoints, settings.sweep_interval_seconds)
    sweeper.start()
    log.info("accepting async invocations for %s", ", ".join(sorted(settings.endpoints)))
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            **uvicorn_options(
                settings.log_level, refusal_code=refusal_code, on_refusal=refused_by_protocol
            ),
        )
    finally:
        sweeper.stop()
        publisher.close()
    return 0
