"""Async endpoints of one name in several namespaces: RabbitMQ has one queue per name; and
batch jobs writing one output prefix (``endpoints/status.output_held_by``).

The queue of an async endpoint is named after the endpoint alone (the gateway routes by name,
and a queue outlives its endpoint), so two of one name in two namespaces would consume each
other's requests: the workers of one reading the other's inputs, writing its outputs. The
oldest holds the name; the operator keeps any other at zero workers, ``Failed`` with
``NameInUse``, until it holds the name alone. The queue, kept after the older one is deleted,
may still hold its requests: each carries the namespace it was accepted in, and the heir's
workers dead-letter those unread (``workers/async_worker.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from infermodes.endpoints import spec as s
from infermodes.endpoints.status import BatchOutput, batch_output_released
from infermodes.operator.kube import KubeDoor, KubeError

log = logging.getLogger("infermodes.operator")

LIST_INTERVAL_SECONDS = 5.0  # one list of every endpoint serves the reconciles meanwhile
Holder = tuple[str, str]  # (namespace, creationTimestamp: RFC 3339, which sorts as time)


def holder_elsewhere(namespace: str, created: str, holders: Iterable[Holder]) -> str | None:
    """The namespace of the endpoint that holds the name when it is not this one: the oldest
    (then the first namespace in order, for two created in the same second)."""
    first = min([(created, namespace), *((when, where) for where, when in holders)])
    return None if first[1] == namespace else first[1]


class AsyncNames:
    """Every async InferenceEndpoint's namespace and creation time by name, and every batch
    one's output prefix, listed across namespaces at most every ``LIST_INTERVAL_SECONDS``, and
    again for an endpoint the last list did not hold: a list made before it existed may lack an
    older one (two applied together would both start); reconciles run on threads."""

    def __init__(
        self,
        kube: KubeDoor,
        clock: Callable[[], float] = time.monotonic,
        interval: float = LIST_INTERVAL_SECONDS,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.interval = interval
        self._lock = threading.Lock()
        self._listed_at: float | None = None
        self._by_name: dict[str, list[Holder]] | None = None
        self._outputs: list[BatchOutput] | None = None
        self._listed: set[tuple[str, str]] = set()  # (namespace, name) of every one listed

    def holders(self, namespace: str, name: str) -> list[Holder] | None:
        """The async endpoints named ``name``, the asking one (in ``namespace``) among them,
        as last listed (a list that fails keeps the one before: a throttled API server must
        not let a held-back endpoint start its workers); None when they were never listed
        (an operator allowed to read only some namespaces): nothing is held back then."""
        with self._lock:
            self._refresh((namespace, name))
            if self._by_name is None:
                return None
            return list(self._by_name.get(name, []))

    def batch_outputs(self, namespace: str, name: str) -> list[BatchOutput] | None:
        """Every batch endpoint's hold on its output prefix, as last listed for the one asking
        (None: never listed, and nothing is held back)."""
        with self._lock:
            self._refresh((namespace, name))
            return None if self._outputs is None else list(self._outputs)

    def _refresh(self, asking: tuple[str, str]) -> None:
        """List again when the last list is older than the interval, or did not hold the
        endpoint asking: a list that holds it was made after it was created, so it holds every
        endpoint older than it (a list that fails keeps the one before)."""
        now = self.clock()
        recent = self._listed_at is not None and now - self._listed_at < self.interval
        if recent and asking in self._listed:
            return
        self._listed_at = now
        try:
            found = self.kube.list_everywhere(f"{s.GROUP}/{s.VERSION}", s.KIND)
        except KubeError as exc:
            log.warning("cannot list the endpoints of other namespaces: %s", exc)
            return
        by_name: dict[str, list[Holder]] = {}
        outputs: list[BatchOutput] = []
        listed: set[tuple[str, str]] = set()
        for obj in found:
            meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
            namespace = str(meta.get("namespace"))
            listed.add((namespace, str(meta.get("name"))))
            created = str(meta.get("creationTimestamp") or "")
            if spec.get("mode") == s.Mode.ASYNC:
                by_name.setdefault(str(meta.get("name")), []).append((namespace, created))
            uri = ((spec.get("batch") or {}).get("output") or {}).get("uri")
            if spec.get("mode") == s.Mode.BATCH and isinstance(uri, str):
                phase = (obj.get("status") or {}).get("phase")
                ended = batch_output_released(phase, meta.get("labels") or {})
                outputs.append(BatchOutput(f"{namespace}/{meta.get('name')}", created, uri, ended))
        self._by_name, self._outputs, self._listed = by_name, outputs, listed
