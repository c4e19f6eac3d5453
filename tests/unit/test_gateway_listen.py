"""The gateway binds before anything starts: one socket per address its host resolves to, as
uvicorn's own bind would, or none and a line naming the address."""

from __future__ import annotations

import logging
import socket

import pytest

from infermodes.gateway.app import listen


def test_a_busy_port_is_refused_naming_the_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="infermodes.gateway")
    sockets = listen("127.0.0.1", 0)
    assert sockets is not None and len(sockets) == 1
    try:
        port = sockets[0].getsockname()[1]
        assert listen("127.0.0.1", port) is None
        assert (
            f"Address already in use (while attempting to bind on address ('127.0.0.1', {port}))"
            in caplog.text
        )
        assert f"listening on http://127.0.0.1:{port}" in caplog.text
    finally:
        sockets[0].close()


def test_every_address_of_the_wildcard_host_is_bound() -> None:
    sockets = listen("", 0)
    assert sockets is not None
    try:
        families = {sock.family for sock in sockets}
        assert socket.AF_INET in families
        if socket.has_ipv6:
            assert socket.AF_INET6 in families
            v6 = next(sock for sock in sockets if sock.family == socket.AF_INET6)
            assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for sock in sockets:
            sock.close()


def test_up_keeps_metrics_on_its_one_port_whatever_the_gateways_variable_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway's side port is for a cluster's scraper; ``up``'s /metrics stay beside its
    API on its one loopback port, which its own tools and a local Prometheus read."""
    from infermodes.local.up import gateway_options
    from infermodes.settings import GatewaySettings

    monkeypatch.setenv("INFERMODES_GATEWAY_METRICS_PORT", "9090")
    assert GatewaySettings().metrics_port == 9090
    assert GatewaySettings(**gateway_options(8080, "info")).metrics_port == 0  # type: ignore[arg-type]
