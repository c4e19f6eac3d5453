"""The state dir's files, written whole or not at all: ``infermodes up`` reads them back after
a crash or a power loss, and a half-written or empty one would read as another state."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """``text`` as ``path``'s content, durable once this returns: a temporary file beside it,
    fsynced, renamed over it, and the folder fsynced (a power loss leaves the old file or the
    new, never an empty one)."""
    temporary = path.with_suffix(".tmp")
    with temporary.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
