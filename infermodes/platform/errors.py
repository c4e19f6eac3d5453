"""The control plane's errors, as the platform's JSON 1.1 protocol spells them.

boto3's ``sagemaker`` client reads the code from the body's ``__type`` (the runtime routes'
``{"error": ...}`` shape is another protocol's, ``gateway/errors.py``), and its waiters match
on it: ``endpoint_in_service`` fails on ``ValidationException`` (what the platform answers for
an endpoint or a transform job that does not exist), ``endpoint_deleted`` succeeds on it,
``transform_job_completed_or_stopped`` fails on it."""

from __future__ import annotations

from infermodes.errors import InfermodesError

ERROR_TYPE_HEADER = "x-amzn-ErrorType"
CONTENT_TYPE = "application/x-amz-json-1.1"


class ApiError(InfermodesError):
    """A client error: HTTP 400 with the class name as the code."""

    status_code = 400

    @property
    def code(self) -> str:
        return type(self).__name__


class ValidationException(ApiError):
    """Bad input, or (as the platform answers) a model, config, endpoint or transform job that
    does not exist, or a model, config or endpoint that already exists."""


class ResourceInUse(ApiError):
    """A name already taken by a transform job or an endpoint."""


class ResourceLimitExceeded(ApiError):
    """More endpoints and transform jobs than the actuator is configured to run."""


class UnknownOperationException(ApiError):
    """An ``X-Amz-Target`` this API does not serve."""


class SerializationException(ApiError):
    """A body that is not a JSON object."""


class ThrottlingException(ApiError):
    """The store asked for fewer requests: boto3 retries this code with its back-off."""


class ServiceUnavailable(ApiError):
    """The store cannot answer for a moment: a 503, which boto3 retries."""

    status_code = 503
