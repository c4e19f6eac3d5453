"""Demand: what the gateway tells the operator about a synchronous endpoint's traffic.

The gateway is the only process that sees every request, and the operator is the only writer of
replicas, so demand travels from one to the other as an annotation on the InferenceEndpoint:
each gateway replica writes its own key, the operator's watch sees the change within
milliseconds and reconciles the endpoint at once (a cold start does not wait for a timer).

For an async endpoint the queue is the demand, and the entry only wakes the operator: a gateway
writes it when it accepts the first request while the pool has no worker (once each time the
pool is at zero), so the pool starts without waiting for the operator's next look at the queue.

A gateway rewrites its entry when its figures change, at most once per ``WRITE_INTERVAL_SECONDS``
except that the first held request of a cold start is written at once, and at least every
``HEARTBEAT_SECONDS`` while it has work: an entry older than ``STALE_SECONDS`` counts no
in-flight work (its gateway died or lost its API access), so a dead gateway cannot keep an
endpoint scaled up forever.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

ANNOTATION_PREFIX = "infermodes.dev/demand-"
WRITE_INTERVAL_SECONDS = 1.0
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 90.0
MAX_DEMAND = 1_000_000  # requests one gateway replica can say it holds: far past any maximum


def annotation_key(gateway_id: str) -> str:
    """The annotation one gateway replica writes (a name part of at most 63 characters)."""
    digest = hashlib.sha256(gateway_id.encode()).hexdigest()[:12]
    return f"{ANNOTATION_PREFIX}{digest}"


@dataclass(frozen=True)
class GatewayDemand:
    """One gateway replica's view of one endpoint, at wall-clock time ``at``."""

    gateway: str
    in_flight: int  # forwarded to a replica, not yet answered: the most at once since last written
    held: int  # waiting for a replica (cold start)
    last_request_at: float  # when the latest request arrived or ended (0: never)
    at: float

    def to_annotation(self) -> str:
        return json.dumps(
            {
                "gateway": self.gateway,
                "inFlight": self.in_flight,
                "held": self.held,
                "lastRequestAt": self.last_request_at,
                "at": self.at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_annotation(cls, text: str) -> GatewayDemand | None:
        """None for anything that is not a well-formed entry (it is then ignored): anyone who
        may annotate the endpoint can write one, so an infinity (``1e999``, which ``int``
        refuses with an OverflowError), a NaN or a count past ``MAX_DEMAND`` (whose replicas
        no float could hold) is ignored too."""
        try:
            raw = json.loads(text)
            entry = cls(
                gateway=str(raw["gateway"]),
                in_flight=max(0, int(raw["inFlight"])),
                held=max(0, int(raw["held"])),
                last_request_at=float(raw["lastRequestAt"]),
                at=float(raw["at"]),
            )
        except (ValueError, TypeError, KeyError, OverflowError):
            return None
        finite = math.isfinite(entry.last_request_at + entry.at)
        bounded = entry.in_flight + entry.held <= MAX_DEMAND
        return entry if finite and bounded else None


@dataclass(frozen=True)
class Demand:
    """Every gateway's demand for one endpoint, summed."""

    in_flight: int = 0
    held: int = 0
    last_request_at: float = 0.0

    @property
    def active(self) -> int:
        """Invocations that need a replica now."""
        return self.in_flight + self.held

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None, now: float) -> Demand:
        """Sum the fresh entries; stale ones still tell when the last request was seen."""
        in_flight = held = 0
        last = 0.0
        for key, value in (annotations or {}).items():
            if not key.startswith(ANNOTATION_PREFIX):
                continue
            entry = GatewayDemand.from_annotation(value)
            if entry is None:
                continue
            last = max(last, entry.last_request_at)
            if now - entry.at <= STALE_SECONDS:
                in_flight += entry.in_flight
                held += entry.held
        return cls(in_flight, held, last)
