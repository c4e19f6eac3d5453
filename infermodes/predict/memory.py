"""How large an input a worker can decode in Python without being OOM-killed.

JSON (and recordio) inputs are decoded whole, at ``codecs.JSON_BYTES_EXPANSION`` times their
size at peak (each Python reader at its ``codecs.PYTHON_READ_COST``), and every
concurrent invocation may decode one at once. A worker killed for memory loses every request
it holds, and the one that killed it comes back until its attempts run out; refusing it (413's
PayloadTooLarge, a failure record) is the better end. The async worker caps its JSON requests
so (and its RecordIO ones, by their length at the reader's cost per byte, then by their
estimated cost from their frames and bytes, as the model server does), and the batch runner
its whole JSON documents (``splitType None``), whose pod would otherwise be killed with the
job's other objects: these cap an input's length, at its reader's worst cost per byte. The
batch runner packs the CSV and libsvm mini-batches Python reads within ``InputCap.budget`` by
their estimated cost, from their rows and bytes, as it packs them (``records.MemoryBudget``).
The model server holds the JSON bodies its native decoder does not take
(``codecs.decode_json``), which Python's parser reads whole, and the CSV, libsvm and RecordIO
bodies its Python readers read (``codecs.decode``) to each worker's ``memory_share`` by their
estimated cost, from their rows and bytes.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from infermodes.predict.codecs import CSV, JSON, LIBSVM, PYTHON_READ_COST, RECORDIO

log = logging.getLogger("infermodes.memory")

CGROUP = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes "no limit" as the largest page-aligned int64; anything this large is none.
_UNLIMITED = 1 << 60
# However little memory is spare, a small input (~2 MB to decode as JSON) is still taken.
MIN_INPUT_CAP = 64 * 1024


def cgroup_memory_limit(root: Path = CGROUP, membership: str | None = None) -> int | None:
    """The memory limit this process runs under: the smallest limit on its own cgroup's path
    and every parent up to the mount ``root`` (the kernel enforces each), from v2's
    ``memory.max``, or from v1's ``memory.limit_in_bytes`` when the memory controller is on v1.
    ``membership`` is /proc/self/cgroup's text (read when None), which names the cgroup: in a
    pod the limit sits on a cgroup below the mount root, unless the mount is namespaced. None
    when no limit is set or none can be read."""
    if membership is None:
        try:
            membership = PROC_SELF_CGROUP.read_text()
        except OSError:
            membership = ""
    found = _memory_cgroup(membership)
    if found is None:
        return None
    folder, name, path = found
    parts = [part for part in path.split("/") if part]
    if ".." in parts:  # a cgroup outside this mount's namespace: none of its files are ours
        return None
    limits = [
        limit
        for depth in range(len(parts), -1, -1)
        if (limit := _limit_in(root.joinpath(folder, *parts[:depth], name))) is not None
    ]
    return min(limits, default=None)


def _memory_cgroup(membership: str) -> tuple[str, str, str] | None:
    """(controller folder, limit file, cgroup path) of the memory controller: v1's own
    hierarchy line when it has one (a hybrid host keeps memory on v1), else v2's ``0::``."""
    unified = None
    for line in membership.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "memory" in controllers.split(","):
            return "memory", "memory.limit_in_bytes", path
        if number == "0" and controllers == "":
            unified = ("", "memory.max", path)
    return unified


def _limit_in(file: Path) -> int | None:
    """One level's limit; None for "max", v1's "no limit", or a file that cannot be read."""
    try:
        text = file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) < _UNLIMITED else None


def read_budget(share: int, expansion: int) -> int:
    """The memory one invocation may decode in: its ``share``, never less than what a small
    input (``MIN_INPUT_CAP`` bytes) costs at ``expansion`` times its size."""
    return max(share, MIN_INPUT_CAP * expansion)


def read_budgets(share: int, content_types: Iterable[str]) -> dict[str, int]:
    """The memory one Python read of each type may take within ``share``, against its
    estimate (``codecs.PYTHON_READ_COST``): the model server's for every type, the async
    worker's for RecordIO, which it reads whole."""
    return {
        content_type: read_budget(share, PYTHON_READ_COST[content_type].worst_per_byte)
        for content_type in content_types
    }


def input_cap(configured: int, share: int | None, expansion: int) -> int:
    """The largest input one invocation may decode within its ``share`` of the memory (None:
    unknown), each input costing ``expansion`` times its size at peak; never above
    ``configured`` (``max_json_bytes``, say), which also holds when memory is unknown."""
    if share is None:
        return configured
    return min(configured, read_budget(share, expansion) // expansion)


def memory_share(memory_bytes: int | None, concurrency: int, processes: int) -> int | None:
    """The memory each of ``concurrency`` invocations may decode in at once: ``memory_bytes``
    (unset: this process's cgroup limit; None when neither is known) less what this process
    holds now (its model, its runtime), ``processes`` times over when worker processes each
    load the model too."""
    memory = memory_bytes or cgroup_memory_limit()
    if memory is None:
        return None
    return max(memory - peak_rss_bytes() * processes, 0) // concurrency


def peak_rss_bytes(status: Path = Path("/proc/self/status")) -> int:
    """This process's peak resident memory since it started its program: Linux's ``VmHWM``.
    Not ``getrusage``'s ``ru_maxrss``, which keeps the peak of the process it was spawned
    from (Linux carries it across ``execve``): a worker started by a large process (``up``,
    a test runner holding 400 MiB) measured its parent's peak as its own, and its inputs
    were capped at the floor. ``ru_maxrss`` where ``/proc`` is not."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@dataclass(frozen=True)
class InputCap:
    """The cap a process keeps to, and what it was derived from (for its refusals): ``budget``
    is the memory one read may take (``read_budget``; None when the memory is unknown), which
    a reader whose rows are counted holds its estimate to, rather than ``bytes``."""

    bytes: int
    memory: int | None
    concurrency: int
    budget: int | None


# the input types as the cap's log line names them
_NAMES = {JSON: "JSON", CSV: "CSV", LIBSVM: "libsvm", RECORDIO: "RecordIO"}


def process_input_caps(
    configured: int,
    memory_bytes: int | None,
    concurrency: int,
    expansions: Mapping[str, int],
    *,
    processes: int = 1,
) -> dict[str, InputCap]:
    """This process's cap on each input type whose reader costs ``expansions[type]`` bytes of
    memory per byte, measured once its model is loaded: within ``memory_bytes`` (unset: its
    cgroup's limit), less what it holds now, ``processes`` times over when worker processes
    each load the model too."""
    memory = memory_bytes or cgroup_memory_limit()
    share = memory_share(memory, concurrency, processes)
    caps = {
        content_type: InputCap(
            input_cap(configured, share, expansion),
            memory,
            concurrency,
            None if share is None else read_budget(share, expansion),
        )
        for content_type, expansion in expansions.items()
    }
    return caps


def log_input_caps(caps: Mapping[str, InputCap]) -> None:
    """Logs each cap at start, for an operator to see what an input of each type may be (a
    reader whose rows are counted as it packs says what binds it instead: the batch runner)."""
    for content_type, cap in caps.items():
        log.info(
            "%s inputs capped at %d bytes: memory %s, concurrency %d",
            _NAMES.get(content_type, content_type),
            cap.bytes,
            "unlimited" if cap.memory is None else cap.memory,
            cap.concurrency,
        )
