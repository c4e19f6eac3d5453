"""Which Host headers a gateway on loopback only answers (a guard against DNS rebinding), and
which bind addresses make it loopback only."""

from __future__ import annotations

import pytest

from infermodes.gateway.auth import loopback_name, loopback_only


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8080", "LocalHost.:8080", "app.localhost:9", "127.0.0.1",
     "127.0.0.1:8080", "127.9.8.7:1", "127.1:8080", "[::1]", "[::1]:8080", "::1"],
)  # fmt: skip
def test_loopback_names_pass(host: str) -> None:
    assert loopback_name(host)


@pytest.mark.parametrize(
    "host",
    ["attacker.example", "attacker.example:8080", "localhost.attacker.example", "127.0.0.1.nip.io",
     "0.0.0.0:8080", "10.0.0.1", "[::]:8080", "[fe80::1]", "", "[", "localhost:80:80",
     "x" * 300],
)  # fmt: skip
def test_other_names_are_refused(host: str) -> None:
    assert not loopback_name(host)


def test_only_loopback_binds_are_loopback_only() -> None:
    assert loopback_only("127.0.0.1")
    assert loopback_only("localhost")
    assert loopback_only("::1")
    assert not loopback_only("0.0.0.0")
    assert not loopback_only("")
