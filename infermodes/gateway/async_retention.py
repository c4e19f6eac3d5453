"""How long the async plane keeps what it stores for itself, and the sweep that enforces it.

- An inline input ``<inputPath>/<id>.in`` is removed by the worker once its request has its
  result. One left behind (an accepting process killed between storing and queueing) is
  removed after ``INLINE_INPUT_MAX_AGE``: by then no worker can still start on it, since a
  request expires at most ``MAX_TTL_SECONDS`` after acceptance and runs at most
  ``MAX_INVOCATION_TIMEOUT_SECONDS``.
- A request record ``<inputPath>/<id>.request`` (the inference id's owner, see
  ``async_accept``) is kept ``RECORD_MAX_AGE``, longer than any request lives; after that the
  id's result objects alone keep it from naming a different request.
- A result claim ``<inputPath>/<id>.result`` (the worker's, see ``InvocationRequest``) is kept
  as long: once no copy of the request can run any more, its stored result decides alone.
- A partial write (a worker or API killed mid-write: a hidden ``.<name>.<random>.partial``
  file, or an incomplete S3 multipart upload) is removed after ``PARTIAL_MAX_AGE`` without a
  write, longer than any write lasts.

Outputs and error objects are the caller's, never removed. By-reference inputs are never
touched; only names of the form ``<inference id>.in``, ``.request`` and ``.result`` directly
under the input path count as ours, and only partial writes of ``<inference id>.<suffix>``
objects directly under the three paths (an endpoint's path may be a shared bucket's root).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from infermodes.errors import StorageError
from infermodes.queueing.messages import INFERENCE_ID, MAX_TTL_SECONDS
from infermodes.settings import MAX_INVOCATION_TIMEOUT_SECONDS, AsyncEndpoint
from infermodes.storage import Storage, folder_uri, one_error

log = logging.getLogger("infermodes.async_api")

HOUR = 3600
INLINE_INPUT_MAX_AGE = MAX_TTL_SECONDS + MAX_INVOCATION_TIMEOUT_SECONDS + HOUR  # 8 h
RECORD_MAX_AGE = 24 * HOUR
PARTIAL_MAX_AGE = MAX_INVOCATION_TIMEOUT_SECONDS + HOUR  # 2 h
INLINE_SUFFIX = ".in"
RECORD_SUFFIX = ".request"
CLAIM_SUFFIX = ".result"
MAX_AGE_BY_SUFFIX = {
    INLINE_SUFFIX: INLINE_INPUT_MAX_AGE,
    RECORD_SUFFIX: RECORD_MAX_AGE,
    CLAIM_SUFFIX: RECORD_MAX_AGE,
}


# What the async plane writes: inline inputs, records and claims, outputs, error objects.
WRITTEN_SUFFIXES = (*MAX_AGE_BY_SUFFIX, ".out", ".error")


def id_suffix(name: str) -> str | None:
    """The suffix of a name of the form ``<inference id>.<suffix>`` (None for any other)."""
    stem, dot, suffix = name.rpartition(".")
    return dot + suffix if dot and INFERENCE_ID.fullmatch(stem) else None


def written_by_us(name: str) -> bool:
    """Whether an object name is one the async plane writes (``<inference id>.<suffix>``):
    only the partial writes of those are swept, whatever else shares the folder or bucket."""
    return id_suffix(name) in WRITTEN_SUFFIXES


def own_suffix(base: str, uri: str) -> str | None:
    """The suffix of ``uri`` when it is one of the API's own objects under the input prefix
    ``base`` (ending in '/'): ``<inference id>.in``, ``.request`` or ``.result`` directly in
    it."""
    name = uri.removeprefix(base)
    if name == uri or "/" in name:
        return None
    kind = id_suffix(name)
    return kind if kind in MAX_AGE_BY_SUFFIX else None


def sweep(storage: Storage, endpoint: AsyncEndpoint, now: float) -> int:
    """Remove one endpoint's stale objects; returns how many. An object that cannot be
    removed (a refusal) does not stop the rest: the first such error is raised at the end."""
    removed = 0
    failures: list[StorageError] = []
    base = folder_uri(endpoint.input_path)  # as listings of it spell what they hold
    if base is None:
        raise StorageError(f"{endpoint.input_path} is not a storage URI")
    for uri, modified in storage.list_folder_times(base):
        kind = own_suffix(base, uri)
        if kind is not None and modified < now - MAX_AGE_BY_SUFFIX[kind]:
            try:
                storage.delete(uri)
            except StorageError as exc:
                failures.append(exc)
                continue
            removed += 1
    prefixes = {endpoint.input_path, endpoint.output_path, endpoint.failure_path}
    for prefix in sorted(prefixes):
        try:
            removed += storage.remove_partials(
                prefix.rstrip("/") + "/", now - PARTIAL_MAX_AGE, written_by_us
            )
        except StorageError as exc:
            failures.append(exc)
    if failures:
        raise one_error("some stale objects were left", failures)
    return removed


class Sweeper:
    """Sweeps every endpoint at start and every ``interval`` seconds on a daemon thread (0:
    never). A storage failure is one warning; the next sweep tries again."""

    def __init__(
        self,
        storage: Storage,
        endpoints: Mapping[str, AsyncEndpoint],
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.endpoints = endpoints
        self.interval = interval
        self.clock = clock
        self._stop = threading.Event()

    def start(self) -> None:
        if self.interval > 0:
            threading.Thread(target=self._run, name="retention-sweep", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            self.sweep_all()
            if self._stop.wait(self.interval):
                return

    def sweep_all(self) -> None:
        for name, endpoint in sorted(self.endpoints.items()):
            try:
                removed = sweep(self.storage, endpoint, self.clock())
            except StorageError as exc:
                log.warning("retention sweep of %s failed: %s", name, exc)
                continue
            if removed:
                log.info("retention sweep of %s: removed %d stale object(s)", name, removed)
