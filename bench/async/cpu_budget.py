"""Hold a process to a CPU budget the way the kubelet holds a pod to ``resources.limits.cpu``:
a CFS quota on a cgroup of its own (``cores`` x 100 ms of CPU time per 100 ms period).

An endpoint's ``resources.cpu`` is each replica's request and limit, so on a cluster every
worker runs under such a quota; ``drain.py --worker-cpu`` measures the pool that way. Needs a
writable cgroup ``cpu`` hierarchy: v1 (``/sys/fs/cgroup/cpu``) or v2 (``cpu.max``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

PERIOD_US = 100_000  # the kubelet's CFS period
V1 = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup")


def _hierarchy() -> tuple[Path, bool]:
    """The cpu hierarchy's root and whether it is cgroup v2."""
    if (V1 / "cpu.cfs_quota_us").exists():
        return V1, False
    if "cpu" in (V2 / "cgroup.subtree_control").read_text(errors="replace").split():
        return V2, True
    raise RuntimeError("no writable cgroup cpu hierarchy: --worker-cpu needs one (run as root)")


@contextlib.contextmanager
def cpu_budget(pid: int, cores: float, name: str) -> Iterator[Path]:
    """Moves ``pid`` (every thread of it, and what it starts later) into a new cgroup with a
    quota of ``cores``; on exit moves it back if it still runs and removes the cgroup."""
    if cores <= 0:
        raise ValueError(f"a CPU budget must be positive, not {cores}")
    root, v2 = _hierarchy()
    group = root / f"infermodes-bench-{os.getpid()}-{name}"
    group.mkdir()
    try:
        quota = round(cores * PERIOD_US)
        if v2:
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
        else:
            (group / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
            (group / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (group / "cgroup.procs").write_text(f"{pid}\n")
        yield group
    finally:
        for left in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError, OSError):
                (root / "cgroup.procs").write_text(f"{left}\n")
        group.rmdir()


def throttled_seconds(group: Path) -> float:
    """CPU time the quota withheld so far (``throttled_time`` in ns, v1; ``throttled_usec``, v2)."""
    for line in (group / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "throttled_time":
            return int(value) / 1e9
        if key == "throttled_usec":
            return int(value) / 1e6
    return 0.0
