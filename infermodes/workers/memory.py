"""How large a JSON input a worker can decode without being OOM-killed.

JSON (and recordio) inputs are decoded whole, at ``codecs.JSON_BYTES_EXPANSION`` times their
size at peak, and every concurrent invocation may decode one at once. A worker killed for
memory loses every request it holds, and the one that killed it comes back until its
attempts run out; refusing it (413's PayloadTooLarge, a failure record) is the better end.
"""

from __future__ import annotations

from pathlib import Path

from infermodes.predict.codecs import JSON_BYTES_EXPANSION

CGROUP = Path("/sys/fs/cgroup")
# cgroup v1 writes "no limit" as the largest page-aligned int64; anything this large is none.
_UNLIMITED = 1 << 60
# However little memory is spare, a small JSON body (~2 MB to decode) is still taken.
MIN_JSON_CAP = 64 * 1024


def cgroup_memory_limit(root: Path = CGROUP) -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, else v1's
    ``memory/memory.limit_in_bytes``); None when there is none or it cannot be read."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            text = (root / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _UNLIMITED:
            return int(text)
        return None  # "max": unlimited
    return None


def json_input_cap(configured: int, memory: int | None, used: int, concurrency: int) -> int:
    """The largest JSON input each of ``concurrency`` invocations may decode at once within
    ``memory`` bytes, ``used`` of which the process holds already (the model, the runtime);
    never above ``configured`` (``max_json_bytes``), which also holds when memory is unknown."""
    if memory is None:
        return configured
    spare = max(memory - used, 0) // (concurrency * JSON_BYTES_EXPANSION)
    return min(configured, max(spare, MIN_JSON_CAP))
