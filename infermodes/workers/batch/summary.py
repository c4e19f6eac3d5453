"""What one instance did, for people (the last log line) and for the operator (a JSON object
under the output prefix, ``plan.summary_uri``, and optionally the pod's termination message).

Format (version 1)::

    {"version": 1, "index": 0, "count": 2, "state": "Completed" | "Failed" | "Stopped",
     "units": {"assigned": 3, "succeeded": 2, "skipped": 0, "failed": 1},
     "objectsWritten": 2, "records": 40000, "seconds": 1.9, "recordsPerSecond": 21052.6,
     "cpuSeconds": 1.4,
     "failures": [{"object": "s3://b/in/c.csv", "line": 17, "reason": "column 3: ..."}],
     "ranges": [{"object": "s3://b/in/big.csv", "range": 0, "of": 2, "outcome": "succeeded",
                 "records": 20000}],
     "error": null}

``records`` counts the records of the outputs stored, as splitType cuts them (a line; a
whole JSON document with splitType None), not the rows a JSON record may hold. A unit is an
object or one byte range of a large object; ``objectsWritten`` counts the
``.out`` objects this instance wrote (an assembled large object counts once, where it was
assembled). ``failures`` names each failed object with its first bad record (``line`` is null
when the object failed as a whole, e.g. it could not be read); an object split over instances
may appear in several instances' summaries. ``error`` is set when the instance could not work
at all (no listing, bad manifest).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from infermodes.errors import clipped

TERMINATION_MESSAGE_LIMIT = 4096  # what Kubernetes keeps of a termination message


FAILURE_TEXT_KEPT = 600  # of an object's name or a reason, in the termination message


def clip(text: str) -> str:
    return clipped(text, FAILURE_TEXT_KEPT)


@dataclass(frozen=True)
class Failure:
    object: str
    line: int | None
    reason: str


@dataclass(frozen=True)
class RangeOutcome:
    """How one byte range of a split object ended here: the job's progress counts the object
    once, over every instance's ranges (``endpoints.status.ended_progress``)."""

    object: str
    range: int
    of: int
    outcome: str  # succeeded, skipped or failed
    records: int


@dataclass
class Summary:
    index: int
    count: int
    assigned: int = 0
    succeeded: int = 0
    skipped: int = 0
    failed: int = 0
    objects_written: int = 0
    records: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of this process (its threads), without interpreter start
    stopped: bool = False
    error: str | None = None
    failures: list[Failure] = field(default_factory=list)
    ranges: list[RangeOutcome] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.stopped:
            return "Stopped"
        return "Failed" if self.failures or self.error else "Completed"

    def document(
        self, failures: list[Failure] | None = None, ranges: bool = True
    ) -> dict[str, object]:
        return {
            "version": 1,
            "index": self.index,
            "count": self.count,
            "state": self.state,
            "units": {
                "assigned": self.assigned,
                "succeeded": self.succeeded,
                "skipped": self.skipped,
                "failed": self.failed,
            },
            "objectsWritten": self.objects_written,
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "recordsPerSecond": round(self.records / self.seconds, 1) if self.seconds else 0.0,
            "cpuSeconds": round(self.cpu_seconds, 3),
            "failures": [asdict(f) for f in (self.failures if failures is None else failures)],
            "ranges": [asdict(r) for r in self.ranges] if ranges else [],
            "error": self.error if failures is None or self.error is None else clip(self.error),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.document(), indent=1).encode() + b"\n"

    def termination_message(self) -> bytes:
        """The summary within Kubernetes' 4 KiB: each failure's names and reason cut short,
        then failures dropped from the end if needed (the full list is in the summary object);
        the state says Failed even when none is left. Split objects' ranges are kept before
        any failure, or dropped all together when they alone do not fit (the job's progress
        then counts this instance's ranges as units, not per object)."""
        kept: list[Failure] = []
        ranges = not self.ranges or len(self._compact(kept, True)) <= TERMINATION_MESSAGE_LIMIT
        text = self._compact(kept, ranges)
        for failure in self.failures:  # a few fit: the whole list is never serialised
            kept.append(Failure(clip(failure.object), failure.line, clip(failure.reason)))
            more = self._compact(kept, ranges)
            if len(more) > TERMINATION_MESSAGE_LIMIT:
                break
            text = more
        return text[:TERMINATION_MESSAGE_LIMIT]

    def _compact(self, failures: list[Failure], ranges: bool) -> bytes:
        return json.dumps(self.document(failures, ranges), separators=(",", ":")).encode()

    def line(self) -> str:
        text = (
            f"{self.state}: {self.records} records in {self.seconds:.1f} s "
            f"({self.records / self.seconds if self.seconds else 0:,.0f}/s); units "
            f"{self.succeeded} done, {self.skipped} skipped, {self.failed} failed "
            f"of {self.assigned}"
        )
        for failure in self.failures:
            where = f" line {failure.line}" if failure.line is not None else ""
            text += f"\n  FAILED {failure.object}{where}: {failure.reason}"
        if self.error:
            text += f"\n  ERROR {self.error}"
        return text
