"""``infermodes up`` reads few of a cluster gateway's ``INFERMODES_GATEWAY_*`` variables: with
access keys set, its invocations answered unsigned and nothing said so. The variables it does
not read are named at start with what it does instead (names only: a value may be a secret),
and its gateway's settings keep their defaults whatever those variables say."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from infermodes.local.children import child_environment
from infermodes.local.up import (
    FROM_ENVIRONMENT,
    INSTEAD,
    UpGatewaySettings,
    gateway_options,
    unused_variables,
    warn_of_unused_variables,
)
from infermodes.settings import NO_SUCH_SETTING, GatewaySettings, warn_of_unknown_variables

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_gateway_setting_is_read_by_up_or_says_what_up_does_instead() -> None:
    """One list of what up reads; a setting a gateway gains is named in the warning until
    up reads it, never silently read nor silently dropped."""
    fields = set(GatewaySettings.model_fields)
    assert fields >= FROM_ENVIRONMENT
    assert set(INSTEAD) == fields - FROM_ENVIRONMENT
    assert not FROM_ENVIRONMENT & set(gateway_options(8080, "info"))


def test_the_readme_names_the_variables_up_reads() -> None:
    """The README's paragraph on up's gateway variables (and its flags' table, for the
    timeout's) names exactly what up reads."""
    text = README.read_text()
    start = text.index("`up`'s port is a gateway's")
    paragraph = text[start : text.index("\n\n", start)]
    named = {name.lower() for name in re.findall(r"`([A-Z][A-Z_]+)`", paragraph)}
    assert named | {"invocation_timeout_seconds"} == FROM_ENVIRONMENT
    assert "`INFERMODES_GATEWAY_INVOCATION_TIMEOUT_SECONDS`" in text[:start]


KEYS = "INFERMODES_GATEWAY_ACCESS_KEYS"
PREFIXES = "INFERMODES_GATEWAY_ASYNC_STORAGE_PREFIXES"
# (environment, what up names of it)
CASES = {
    "none": ({}, {}),
    "read": ({"INFERMODES_GATEWAY_DRAIN_DELAY_SECONDS": "1", "HOME": "/root"}, {}),
    "read-in-any-case": ({"infermodes_gateway_max_idle_connections": "3"}, {}),
    "async-route": (  # the gateway's async accept settings: up's async route reads them too
        {"INFERMODES_GATEWAY_MAX_INLINE_BYTES": "5", "INFERMODES_GATEWAY_PUBLISH_CONNECTIONS": "2",
         "INFERMODES_GATEWAY_ALLOWED_INPUT_PREFIXES": '["s3://inputs/"]'},
        {},
    ),
    "keys-and-prefixes": (
        {KEYS: "AKID:secret", PREFIXES: '["file:///nowhere/"]',
         "INFERMODES_GATEWAY_SWEEP_INTERVAL_SECONDS": "5"},
        {KEYS: INSTEAD["access_keys"], PREFIXES: INSTEAD["async_storage_prefixes"]},
    ),
    "file-in-any-case": (
        {"infermodes_gateway_access_keys_file": "/keys"},
        {"infermodes_gateway_access_keys_file": INSTEAD["access_keys_file"]},
    ),
    "ups-own": (
        {"INFERMODES_GATEWAY_PORT": "9000", "INFERMODES_GATEWAY_LOG_LEVEL": "debug"},
        {"INFERMODES_GATEWAY_LOG_LEVEL": INSTEAD["log_level"],
         "INFERMODES_GATEWAY_PORT": INSTEAD["port"]},
    ),
    "misspelt": (
        {"INFERMODES_GATEWAY_ACESS_KEYS": "AKID:secret"},
        {"INFERMODES_GATEWAY_ACESS_KEYS":
         f"{NO_SUCH_SETTING}; did you mean INFERMODES_GATEWAY_ACCESS_KEYS?"},
    ),
    "no-such-setting": (
        {"INFERMODES_GATEWAY_NOTHING_LIKE_IT": "1"},
        {"INFERMODES_GATEWAY_NOTHING_LIKE_IT": NO_SUCH_SETTING},
    ),
}  # fmt: skip


@pytest.mark.parametrize(("environ", "expected"), CASES.values(), ids=CASES.keys())
def test_unused_variables_are_named_with_what_up_does_instead(
    environ: dict[str, str], expected: dict[str, str]
) -> None:
    assert unused_variables(environ) == expected
    assert not any(value in str(unused_variables(environ)) for value in environ.values())


def test_ups_gateway_keeps_the_default_of_every_setting_it_does_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its async storage prefixes were half-read: a warning naming a chart value up has not,
    the request accepted all the same; access keys, read, were never used."""
    monkeypatch.setenv("INFERMODES_GATEWAY_ASYNC_STORAGE_PREFIXES", '["file:///nowhere/"]')
    monkeypatch.setenv("INFERMODES_GATEWAY_ACCESS_KEYS", "AKID:secret")
    monkeypatch.setenv("INFERMODES_GATEWAY_BROKER_URL", "amqp://elsewhere")
    monkeypatch.setenv("INFERMODES_GATEWAY_DRAIN_TIMEOUT_SECONDS", "5")
    assert GatewaySettings().async_storage_prefixes == ["file:///nowhere/"]
    settings = UpGatewaySettings(**gateway_options(8080, "info"))  # type: ignore[arg-type]
    assert settings.async_storage_prefixes == []
    assert settings.access_keys.get_secret_value() == ""
    assert settings.broker_url is None
    assert settings.drain_timeout_seconds == 5.0  # one it reads
    assert (settings.port, settings.host, settings.metrics_port) == (8080, "127.0.0.1", 0)


def test_ups_async_route_reads_the_gateways_accept_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``up`` kept the inline limit, publish connections and allowed input prefixes of its
    async route at its own values, whatever its environment said: one name, set for a cluster
    gateway, now sets them under ``up`` too."""
    monkeypatch.setenv("INFERMODES_GATEWAY_MAX_INLINE_BYTES", "5")
    monkeypatch.setenv("INFERMODES_GATEWAY_PUBLISH_CONNECTIONS", "2")
    monkeypatch.setenv("INFERMODES_GATEWAY_ALLOWED_INPUT_PREFIXES", '["s3://inputs/"]')
    settings = UpGatewaySettings(**gateway_options(8080, "info"))  # type: ignore[arg-type]
    assert settings.max_inline_bytes == 5
    assert settings.publish_connections == 2
    assert settings.allowed_input_prefixes == ["s3://inputs/"]


def test_a_misspelt_name_is_said_in_the_same_words_by_up_and_by_the_gateway(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``up`` said "no gateway has such a setting; did you mean X?" where the gateway itself
    said "(did you mean X?)": one function words both warnings now."""
    monkeypatch.setenv("INFERMODES_GATEWAY_ACESS_KEYS", "AKID:very-secret")
    monkeypatch.setenv("INFERMODES_GATEWAY_NOTHING_LIKE_IT", "another-secret")
    with caplog.at_level(logging.WARNING):
        warn_of_unknown_variables(GatewaySettings())
        warn_of_unused_variables(os.environ)
    gateways, ups = (record.getMessage() for record in caplog.records)
    said = (
        "INFERMODES_GATEWAY_ACESS_KEYS (no such setting; did you mean "
        "INFERMODES_GATEWAY_ACCESS_KEYS?); INFERMODES_GATEWAY_NOTHING_LIKE_IT (no such setting)"
    )
    assert gateways.endswith(f": {said}") and ups.endswith(f": {said}"), (gateways, ups)
    assert "secret" not in caplog.text


def test_a_name_cannot_forge_a_line_of_ups_log(caplog: pytest.LogCaptureFixture) -> None:
    """Its newline escaped, as the processes' own warning escapes it."""
    with caplog.at_level(logging.WARNING):
        warn_of_unused_variables({"INFERMODES_GATEWAY_X\nWARNING forged": "1"})
    [warning] = (record.getMessage() for record in caplog.records)
    assert warning.endswith(f": INFERMODES_GATEWAY_X\\nWARNING forged ({NO_SUCH_SETTING})")


def test_children_are_not_passed_the_variables_they_would_only_warn_of() -> None:
    """Each model server, worker and batch instance named the same unknown variables of
    ``up``'s environment again, at each start; ``up`` names them once, and keeps them from its
    children, which get every other variable as they were (another process's too)."""
    environ = {
        "INFERMODES_SERVE_WORKRES": "3",
        "infermodes_worker_concurency": "2",
        "INFERMODES_BATCH_NOTHING_LIKE_IT": "1",
        "INFERMODES_SERVE_WORKERS": "1",
        "INFERMODES_WORKER_LOG_LEVEL": "debug",
        "INFERMODES_GATEWAY_NO_SUCH_SETTING": "1",
        "AWS_REGION": "eu-west-1",
    }
    assert child_environment(environ) == {
        "INFERMODES_SERVE_WORKERS": "1",
        "INFERMODES_WORKER_LOG_LEVEL": "debug",
        "INFERMODES_GATEWAY_NO_SUCH_SETTING": "1",
        "AWS_REGION": "eu-west-1",
    }
