"""One module per mode behind one interface (``base.EndpointMode``), chosen in one table.

A mode is pure: from the spec and what the operator observed (``base.Signals``) it decides the
replicas, the desired objects and the status; ``reconcile`` does the reading and applying.
Adding a mode is one module here and one line in ``MODES``.
"""

from __future__ import annotations

from infermodes.endpoints.spec import Mode
from infermodes.operator.modes import async_, batch, realtime, serverless
from infermodes.operator.modes.base import EndpointMode

MODES: dict[Mode, EndpointMode] = {
    Mode.REALTIME: realtime,
    Mode.SERVERLESS: serverless,
    Mode.ASYNC: async_,
    Mode.BATCH: batch,
}


def mode_for(mode: Mode) -> EndpointMode:
    """The mode's module."""
    return MODES[mode]
