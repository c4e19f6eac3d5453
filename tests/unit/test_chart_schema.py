"""The chart's values.schema.json refuses at install what the processes would refuse at start,
and nothing they take: its bounds, log levels, storage prefixes and NetworkPolicy peers are held
to the settings classes the values become (tests/e2e/test_chart_values.py renders with helm)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel

from infermodes.settings import (
    LOG_LEVELS,
    NETWORK_PEER_KEYS,
    GatewaySettings,
    OperatorSettings,
    check_storage_prefixes,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "charts/infermodes/values.schema.json").read_text())


def node(path: str) -> dict[str, Any]:
    """The schema of the value at ``path`` (``gateway.service.port``), its $refs followed."""
    found: dict[str, Any] = SCHEMA
    for key in path.split("."):
        found = found["properties"][key]
        while "$ref" in found:
            found = SCHEMA["definitions"][found["$ref"].removeprefix("#/definitions/")]
    return found


def settings_range(model: type[BaseModel], field: str) -> tuple[float, float, bool]:
    """The lowest and highest values a settings field takes, and whether the lowest is out."""
    low, high, open_low = -math.inf, math.inf, False
    for bound in model.model_fields[field].metadata:
        if isinstance(bound, annotated_types.Ge):
            low = float(bound.ge)
        elif isinstance(bound, annotated_types.Gt):
            low, open_low = float(bound.gt), True
        elif isinstance(bound, annotated_types.Le):
            high = float(bound.le)
    return low, high, open_low


@pytest.mark.parametrize(
    ("value", "model", "field"),
    [
        ("operator.resyncSeconds", OperatorSettings, "resync_seconds"),
        ("operator.metricsPort", OperatorSettings, "metrics_port"),
        ("gateway.invocationTimeoutSeconds", GatewaySettings, "invocation_timeout_seconds"),
        ("gateway.drainDelaySeconds", GatewaySettings, "drain_delay_seconds"),
        ("gateway.metricsPort", GatewaySettings, "metrics_port"),
    ],
)
def test_a_bounded_value_is_bounded_within_its_setting(
    value: str, model: type[BaseModel], field: str
) -> None:
    """The chart may take less than the process (whole seconds the templates add up), never
    more: a value it passed would stop the process at start."""
    low, high, open_low = settings_range(model, field)
    schema = node(value)
    assert schema["maximum"] <= high
    assert schema["minimum"] > low if open_low else schema["minimum"] >= low


def test_the_gateways_drain_timeout_stays_within_its_setting() -> None:
    """templates/gateway.yaml passes invocationTimeoutSeconds + 10 as the drain timeout."""
    _, high, _ = settings_range(GatewaySettings, "drain_timeout_seconds")
    assert node("gateway.invocationTimeoutSeconds")["maximum"] + 10 <= high


@pytest.mark.parametrize("value", ["operator.logLevel", "gateway.logLevel"])
def test_the_log_levels_are_the_processes(value: str) -> None:
    assert tuple(node(value)["enum"]) == LOG_LEVELS


@pytest.mark.parametrize("value", ["networkPolicy.metricsFrom", "networkPolicy.servingFrom"])
def test_a_peer_has_the_keys_the_operator_takes(value: str) -> None:
    peer = node(value)["items"]
    assert set(peer["properties"]) == NETWORK_PEER_KEYS
    assert peer["additionalProperties"] is False
    assert peer["minProperties"] == 1  # an empty peer would let every pod in


PREFIXES = [
    "s3://", "S3://", "s3://bucket", "s3://async/{namespace}/", "s3://b/p?x", "s3://b#f",
    "s3:///key", "s3://b/\x00", "file:///data/", "FILE:///d", "file://localhost/d",
    "file://host/d", "file://data/", "http://x/", "", "/data/",
]  # fmt: skip


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("value", "setting"), [
    ("gateway.asyncStoragePrefixes", "async_storage_prefixes"),
    ("gateway.allowedInputPrefixes", "allowed_input_prefixes"),
])  # fmt: skip
def test_a_storage_prefix_passes_the_chart_when_the_gateway_takes_it(
    prefix: str, value: str, setting: str
) -> None:
    pattern = node(value)["items"]["pattern"]
    try:
        check_storage_prefixes(setting, [prefix])
        taken = True
    except ValueError:
        taken = False
    assert bool(re.search(pattern, prefix)) == taken


def test_a_value_added_after_a_release_is_not_required() -> None:
    """``helm upgrade --reuse-values`` validates the values the last release was installed with,
    without the new chart's defaults: a value this release adds, required, failed every such
    upgrade before anything was applied (gateway.allowedInputPrefixes)."""
    gateway = SCHEMA["properties"]["gateway"]
    assert "allowedInputPrefixes" in gateway["properties"]
    assert "allowedInputPrefixes" not in gateway["required"]
