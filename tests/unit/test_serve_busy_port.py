"""``infermodes serve`` on a port another process holds ends at once with exit code 1 and a
line naming the address and the reason, as ``up`` and the gateway do, not a traceback; the
model is not loaded first (the bind comes before anything else)."""

from __future__ import annotations

import logging
import socket

import pytest

from infermodes.server.runner import serve
from infermodes.settings import ServeSettings


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_a_busy_port_exits_naming_it(
    workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        settings = ServeSettings(model_uri="file:///nowhere/model.tar.gz", port=port,
                                 workers=workers)  # fmt: skip
        with caplog.at_level(logging.ERROR, logger="infermodes.serve"):
            assert serve(settings) == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in caplog.text
