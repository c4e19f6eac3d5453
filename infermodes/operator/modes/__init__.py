"""One module per mode, chosen here. Each exposes ``desired_objects`` and ``observe``."""

from __future__ import annotations

from types import ModuleType

from infermodes.operator.modes import realtime
from infermodes.operator.spec import Mode

MODES: dict[Mode, ModuleType] = {Mode.REALTIME: realtime}


def module_for(mode: Mode) -> ModuleType | None:
    """The mode's module, or None for a mode that is not built yet."""
    return MODES.get(mode)
