"""Summarise a py-spy ``--format raw`` profile as text: where a server's CPU time goes.

A flame graph needs a browser; a report needs numbers. This prints the share of samples spent
in each function itself (self) and under it (inclusive), which is what a finding cites.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# "function (path:line)"; process frames ("process PID:cmdline") and the pieces of command
# lines that contain ";" do not match.
FRAME = re.compile(r"^(?P<name>\S.*) \((?P<path>[^()]+):\d+\)$")


def summarise(raw: Path, top: int = 40) -> str:
    """Return self and inclusive sample shares of the busiest functions in ``raw``."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        # Merge a function's lines, and the workers of one server (py-spy roots each stack
        # in "process PID:cmdline" frames), so that shares add up per function.
        frames = [f"{m['name']} ({m['path']})" for m in map(FRAME.match, stack.split(";")) if m]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if total == 0:
        return f"no samples in {raw}"
    out = [f"{total} samples (active threads only)", "self %  function"]
    out += [f"{100 * n / total:6.1f}  {f}" for f, n in own.most_common(top // 2)]
    out += ["inclusive %  function"]
    out += [f"{100 * n / total:6.1f}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1])))
