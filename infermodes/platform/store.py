"""Where the managed platform's API keeps what it is told: the one interface both actuators
implement. On Kubernetes (``gateway/platform_store.py``) models and endpoint configs are
``InferenceModel`` / ``InferenceEndpointConfig`` objects and endpoints and transform jobs are
``InferenceEndpoint`` objects, so ``kubectl`` sees everything; under ``infermodes up``
(``local/platform_store.py``) records are files in the state dir and endpoints are the
supervisor's. Nothing of the API's state lives only in a process's memory.

Records and endpoints travel as plain JSON-able dicts: a record is the platform request as it
was accepted plus what the API added (ARN, creation time); an endpoint is an InferenceEndpoint
object (``apiVersion``, ``kind``, ``metadata`` with ``name``, ``labels``, ``annotations`` and
``creationTimestamp``, ``spec``, and ``status`` once the actuator wrote one)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol


class RecordKind(StrEnum):
    """The platform objects kept as records (nothing runs for them)."""

    MODEL = "Model"
    ENDPOINT_CONFIG = "EndpointConfig"


class AlreadyExists(Exception):
    """A create named something that exists (the API answers ``ValidationException``, as the
    platform does for "Cannot create already existing ...")."""


class ServedElsewhere(Exception):
    """A create named an endpoint the gateway serves from another namespace: made, it would take
    that name off the gateway, which serves a name from one namespace only (the API answers
    ``ResourceInUse``, as for a name taken in its own)."""


class NotFound(Exception):
    """A replace or delete named something that does not exist."""


class Refused(Exception):
    """The store refused a write for a reason its message names, which the caller can act on
    (an admission policy, a conflict that outlasted the retries); answered as the platform
    answers bad input, not as the store's failure."""


class LimitExceeded(Refused):
    """The store refused a write for a quota (a Kubernetes ResourceQuota)."""


class Unavailable(Exception):
    """The store cannot answer now and may in a moment (its API server restarting, timing out
    or unreachable): answered as the platform answers a transient, which boto3 retries."""


class Throttled(Unavailable):
    """The store asked for fewer requests (the Kubernetes API server's 429, also what a CRD it
    just made answers while its storage starts)."""


JsonObject = dict[str, Any]


class PlatformStore(Protocol):
    """Every method may raise ``AlreadyExists``/``NotFound`` as documented, ``Refused`` (or
    ``LimitExceeded``) for a write the store will not take, and ``Unavailable`` (or
    ``Throttled``) for a transient failure; any other exception is the store's own failure
    (answered 500)."""

    async def create_record(self, kind: RecordKind, name: str, record: JsonObject) -> None:
        """Keep ``record`` under ``name``; ``AlreadyExists`` if one is kept there."""
        ...

    async def read_record(self, kind: RecordKind, name: str) -> JsonObject | None: ...

    async def list_records(self, kind: RecordKind) -> list[JsonObject]: ...

    async def count_records(self, kind: RecordKind) -> int:
        """How many records of ``kind`` are kept (the cap on them): none need be read."""
        ...

    async def delete_record(self, kind: RecordKind, name: str) -> None:
        """``NotFound`` if nothing is kept under ``name``."""
        ...

    async def create_endpoint(self, endpoint: JsonObject) -> None:
        """Apply a new InferenceEndpoint object; ``AlreadyExists`` if its name is taken,
        ``ServedElsewhere`` if an endpoint of that name is served from another namespace."""
        ...

    async def replace_endpoint(self, endpoint: JsonObject) -> None:
        """Replace the spec, labels and annotations of an existing one; ``NotFound`` if gone."""
        ...

    async def read_endpoint(self, name: str) -> JsonObject | None:
        """The object with its status (None when there is none)."""
        ...

    async def list_endpoints(self) -> list[JsonObject]: ...

    async def delete_endpoint(self, name: str) -> None:
        """``NotFound`` if there is no such endpoint."""
        ...
