"""The status the operator writes: phase, reason, replica counts and conditions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from infermodes.endpoints.spec import Phase


@dataclass(frozen=True)
class Progress:
    """A batch job's progress: units are input objects (or byte ranges of large ones)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectsTotal": self.total,
            "objectsDone": self.done,
            "objectsFailed": self.failed,
            "recordsDone": self.records,
            "text": f"{self.done}/{self.total}"
            + (f" ({self.failed} failed)" if self.failed else ""),
        }


@dataclass(frozen=True)
class QueueFigures:
    """An async endpoint's queue as the scaler read it (None: unknown)."""

    ready: int | None
    in_flight: int | None

    @property
    def total(self) -> int | None:
        if self.ready is None or self.in_flight is None:
            return None
        return self.ready + self.in_flight

    def to_dict(self) -> dict[str, Any]:
        return {"ready": self.ready, "inFlight": self.in_flight, "total": self.total}


@dataclass(frozen=True)
class Status:
    phase: Phase
    reason: str = ""
    message: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    desired_replicas: int = 0
    progress: Progress | None = None  # batch only
    backlog: QueueFigures | None = None  # async only

    @classmethod
    def from_dict(cls, status: Any) -> Status | None:
        if not status or "phase" not in status:
            return None
        try:
            phase = Phase(status["phase"])
        except ValueError:
            return None
        return cls(
            phase,
            status.get("reason", ""),
            status.get("message", ""),
            int(status.get("replicas", 0)),
            int(status.get("readyReplicas", 0)),
            int(status.get("desiredReplicas", 0)),
        )

    def to_patch(self, generation: int, previous: Any) -> dict[str, Any]:
        """The status subresource patch. The Ready condition's transition time only moves
        when its value changes, so re-reconciling an unchanged endpoint writes nothing new."""
        ready = "True" if self.phase in (Phase.IN_SERVICE, Phase.COMPLETED) else "False"
        old: dict[str, Any] = next(
            (c for c in (previous or {}).get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        since = old.get("lastTransitionTime") if old.get("status") == ready else None
        condition: dict[str, Any] = {
            "type": "Ready",
            "status": ready,
            "reason": self.reason or self.phase.value,
            "message": self.message,
            "lastTransitionTime": since or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        patch: dict[str, Any] = {
            "phase": self.phase.value,
            "reason": self.reason,
            "message": self.message,
            "replicas": self.replicas,
            "readyReplicas": self.ready_replicas,
            "desiredReplicas": self.desired_replicas,
            "observedGeneration": generation,
            "conditions": [condition],
        }
        if self.progress is not None:
            patch["progress"] = self.progress.to_dict()
        if self.backlog is not None:
            patch["backlog"] = self.backlog.to_dict()
        return patch
