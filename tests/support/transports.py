"""Test doubles of asyncio transports."""

from __future__ import annotations

from typing import Any


class RecordingTransport:
    """Records each system-call-sized write (``writelines`` is one) and whether it was closed;
    answers ``get_extra_info(name)`` with ``"extra <name>"``, to show it is passed through."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, parts: Any) -> None:
        self.writes.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"extra {name}"
