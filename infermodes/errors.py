"""Domain errors. Each carries the HTTP status it maps to, so adapters map them in one place."""

# The exit code of `infermodes serve` and `infermodes worker` when the model cannot be loaded:
# their supervisors stop instead of restarting, and the operator reports ModelLoadFailed.
EXIT_MODEL_LOAD_FAILED = 3
# The exit code of `infermodes worker` when the broker refused its login for a while (a wrong
# user, password or vhost): a container reads its env at start, so only a restart can use a
# mended broker Secret; the operator reports BrokerLoginRefused.
EXIT_BROKER_LOGIN_REFUSED = 5
# The exit codes of `infermodes batch` that its Job must not retry, and the one of a stop.
EXIT_CANNOT_START = 2  # no listing, a bad manifest or filter
EXIT_OBJECTS_FAILED = 4  # some objects failed: retrying the same input will not help
EXIT_STOPPED = 143  # SIGTERM: in-flight outputs were discarded, not left half written
# A worker process of `infermodes batch` died (the OOM killer): its memory is the instance's,
# so the instance ends as one killed would, without a summary, and its Job retries the index
EXIT_WORKERS_DIED = 6
# The object store failed on its side while `infermodes batch` wrote or read an object (not
# reached, a connection cut, a timeout, a 5xx): no fault of the object, which it does not fail;
# the instance ends without a summary, as one killed would, and its Job retries the index,
# skipping what the job wrote
EXIT_STORE_FAILED = 7


class BrokerUrlError(ValueError):
    """A broker URL that names no broker we speak; its text never holds the URL's password."""


class InfermodesError(Exception):
    """Base class; ``status_code`` is what an HTTP adapter answers for it."""

    status_code: int = 500


class ClientClosedRequest(InfermodesError):
    """The client left before its answer (nginx's 499): mid-body, or while its request was held
    by the gateway (whose place under maxConcurrency is then freed at once). Nobody reads the
    answer; counted apart from the client's errors (400s)."""

    status_code = 499


class RequestTimeout(InfermodesError):
    """The request body did not arrive within the server's body timeout: the server gave up
    on it (the protocol answers the 408 itself, ``http.GuardedHttpProtocol``), which is not
    a client that left (499)."""

    status_code = 408


class InvalidInput(InfermodesError):
    """The request body cannot be decoded or does not fit the model."""

    status_code = 400


class UnsupportedContentType(InfermodesError):
    status_code = 415


class NotAcceptable(InfermodesError):
    status_code = 406


class MethodNotAllowed(InfermodesError):
    status_code = 405


class PayloadTooLarge(InfermodesError):
    status_code = 413


class ModelNotReady(InfermodesError):
    status_code = 503


class ModelLoadError(InfermodesError):
    """The model artifact is missing, unreadable or in a format we refuse."""


class StorageError(InfermodesError):
    """Object storage failed or was given a URI it cannot serve."""


class ObjectNotFound(StorageError):
    status_code = 404


def store_failed(exc: StorageError) -> bool:
    """Whether ``exc`` is the store's own failure, which a retry may mend (not reached, a
    timeout, its 5xx), not a 4xx naming what is wrong with the location (missing, refused,
    a name it cannot hold), which no retry mends."""
    return not 400 <= exc.status_code < 500


class EndpointNotFound(InfermodesError):
    status_code = 404


class InputNotAllowed(InfermodesError):
    """An input location outside the prefixes the API was told to allow."""

    status_code = 403


class BrokerUnavailable(InfermodesError):
    """The message broker did not confirm a message: the request was not accepted."""

    status_code = 503


class DelayRefused(InfermodesError):
    """The broker refused to declare a delay queue (``rabbitmq.publish_later``): the broker
    user may not configure it (403), or it exists with other arguments (406). A refusal, not
    an outage: the connection is fine, and retrying changes nothing."""


class BrokerLoginRefused(BrokerUnavailable):
    """The broker refused every login with the URL for ``LOGIN_REFUSED_EXIT_SECONDS``."""


class InvocationTimeout(InfermodesError):
    """An asynchronous request ran past its invocation timeout."""

    status_code = 408


def clipped(text: str, limit: int = 100) -> str:
    """``text`` cut to ``limit`` characters for a message: callers choose what they send."""
    return text if len(text) <= limit else text[:limit] + "..."


def shown(value: object) -> str:
    """A caller's value in a message, cut short (a request may carry a megabyte of it), with
    its length: a string's own, not its quoted form's."""
    text = repr(value)
    if len(text) <= 80:
        return text
    size = len(value) if isinstance(value, str) else len(text)
    return f"{text[:60]}... ({size} characters)"
