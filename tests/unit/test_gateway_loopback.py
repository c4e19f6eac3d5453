"""Which Host and Origin headers a gateway on loopback only answers (a guard against DNS
rebinding and cross-site posts from web pages), and which bind addresses make it loopback
only."""

from __future__ import annotations

import socket

import pytest

from infermodes.gateway.auth import foreign_caller, loopback_name, loopback_only


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8080", "LocalHost.:8080", "app.localhost:9", "127.0.0.1",
     "127.0.0.1:8080", "127.9.8.7:1", "127.1:8080", "[::1]", "[::1]:8080", "::1",
     "[::ffff:127.0.0.1]:8080", "0.0.0.0:8080", "[::]:8080", "", socket.gethostname()],
)  # fmt: skip
def test_loopback_names_pass(host: str) -> None:
    assert loopback_name(host)


@pytest.mark.parametrize(
    "host",
    ["attacker.example", "attacker.example:8080", "localhost.attacker.example", "127.0.0.1.nip.io",
     "10.0.0.1", "[::ffff:10.0.0.1]", "[fe80::1]", "[", "localhost:80:80",
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


def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers)}


def test_a_loopback_host_from_no_other_page_passes() -> None:
    assert foreign_caller(scope((b"host", b"127.0.0.1:8080"))) is None
    assert foreign_caller(scope()) is None  # HTTP/1.0: no Host, no browser
    local_page = (b"origin", b"http://localhost:3000")
    assert foreign_caller(scope((b"host", b"127.0.0.1:8080"), local_page)) is None


@pytest.mark.parametrize(
    "origin",
    [b"https://attacker.example", b"http://127.0.0.1.nip.io:8080", b"null", b"file://",
     b"chrome-extension://abc", b"http://localhost.attacker.example"],
)  # fmt: skip
def test_a_request_from_another_web_page_is_refused_naming_its_origin(origin: bytes) -> None:
    found = foreign_caller(scope((b"host", b"127.0.0.1:8080"), (b"origin", origin)))
    assert found is not None and origin.decode() in found


def test_a_foreign_host_is_named_cut_short() -> None:
    found = foreign_caller(scope((b"host", b"a" * 500)))
    assert found is not None and "a" * 100 + "..." in found and "a" * 101 not in found
