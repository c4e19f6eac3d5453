"""Hold a process to a CPU budget the way the kubelet holds a pod to ``resources.limits.cpu``:
a CFS quota on a cgroup of its own (``cores`` x 100 ms of CPU time per 100 ms period).

An endpoint's ``resources.cpu`` is each replica's request and limit, so on a cluster every
worker runs under such a quota; ``drain.py --worker-cpu`` measures the pool that way. Needs a
writable cgroup ``cpu`` hierarchy: v1 (``/sys/fs/cgroup/cpu``) or v2 with the ``cpu``
controller enabled for the root's children.
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
    control = V2 / "cgroup.subtree_control"
    if control.exists() and "cpu" in control.read_text(errors="replace").split():
        return V2, True
    raise RuntimeError(
        "no cgroup cpu hierarchy to set a quota in: neither /sys/fs/cgroup/cpu (v1) nor the "
        "cpu controller enabled in /sys/fs/cgroup/cgroup.subtree_control (v2); run without "
        "--worker-cpu"
    )


def _current_group(pid: int, root: Path, v2: bool) -> Path:
    """The cgroup ``pid`` is in now, in the hierarchy at ``root``."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (v2 and controllers == "") or (not v2 and "cpu" in controllers.split(",")):
            return root / path.lstrip("/")
    return root


@contextlib.contextmanager
def cpu_budget(pid: int, cores: float, name: str) -> Iterator[Path]:
    """Moves ``pid`` (every thread of it, and what it starts later) into a new cgroup with a
    quota of ``cores``; on exit moves what still runs there back to where ``pid`` was and
    removes the cgroup."""
    if cores <= 0:
        raise ValueError(f"a CPU budget must be positive, not {cores}")
    root, v2 = _hierarchy()
    origin = _current_group(pid, root, v2)
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
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                (origin / "cgroup.procs").write_text(f"{left}\n")
        group.rmdir()


def throttled_seconds(group: Path) -> float:
    """Throttled time so far (``throttled_time`` in ns, v1; ``throttled_usec``, v2). The kernel
    adds it up over the CPUs' run queues the group was stopped on, so it can exceed the
    wall-clock time: compare it between runs, not with their duration."""
    for line in (group / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "throttled_time":
            return int(value) / 1e9
        if key == "throttled_usec":
            return int(value) / 1e6
    return 0.0
