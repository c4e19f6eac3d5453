"""A variable under a process's prefix that names none of its settings was ignored without a
word: ``INFERMODES_GATEWAY_ACESS_KEYS`` left a gateway open to unsigned invocations. Each
process names such variables in one warning at start (names only: a value may be a secret),
with the setting it probably meant."""

from __future__ import annotations

import logging
import os

import pytest
from pydantic import AliasChoices, Field

from infermodes.settings import (
    PROCESS_SETTINGS,
    BatchSettings,
    EnvSettings,
    GatewaySettings,
    ServeSettings,
    SettingsConfigDict,
    did_you_mean,
    unknown_variables,
    unknown_variables_named,
    variables_of,
    warn_of_unknown_variables,
)

IDS = [settings_class.__name__ for settings_class in PROCESS_SETTINGS]
# read by infermodes or its tests directly, not as settings: under no process's prefix
NOT_SETTINGS = ["INFERMODES_UP_URL", "INFERMODES_UP_TOKEN_FILE", "INFERMODES_POD_ROOT",
                "INFERMODES_K8S_CACHE", "INFERMODES_TEST_KUBECONFIG"]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_infermodes_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine running the tests has set is not read here."""
    for name in list(os.environ):
        if name.upper().startswith("INFERMODES_"):
            monkeypatch.delenv(name)


def prefix_of(settings_class: type[EnvSettings]) -> str:
    return settings_class.model_config["env_prefix"]


def every_subclass(cls: type[EnvSettings]) -> set[type[EnvSettings]]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *every_subclass(direct)}}


def test_every_process_settings_class_is_known_and_no_two_share_a_prefix() -> None:
    """A class left out of the list would have its variables named by a class whose prefix
    is a shorter start of its own."""
    defined = {
        settings_class
        for settings_class in every_subclass(EnvSettings)
        if settings_class.__module__ == "infermodes.settings"
        and settings_class.model_config.get("env_prefix")
    }
    assert set(PROCESS_SETTINGS) == defined
    assert len({prefix_of(settings_class) for settings_class in PROCESS_SETTINGS}) == 6


@pytest.mark.parametrize("settings_class", PROCESS_SETTINGS, ids=IDS)
def test_a_misspelt_variable_is_named_and_no_variable_any_class_reads(
    settings_class: type[EnvSettings],
) -> None:
    prefix = prefix_of(settings_class)
    every_variable = {
        variable: "1" for other in PROCESS_SETTINGS for variable in variables_of(other)
    }
    environ = {**every_variable, **dict.fromkeys(NOT_SETTINGS, "1"), f"{prefix}LOG_LEVL": "1"}
    assert unknown_variables(settings_class, environ) == [f"{prefix}LOG_LEVL"]
    assert unknown_variables_named(settings_class, environ) == (
        f"{prefix}LOG_LEVL (no such setting; did you mean {prefix}LOG_LEVEL?)"
    )


@pytest.mark.parametrize("settings_class", PROCESS_SETTINGS, ids=IDS)
def test_names_match_in_any_case_and_are_named_as_written(
    settings_class: type[EnvSettings],
) -> None:
    prefix = prefix_of(settings_class).lower()
    environ = {f"{prefix}log_level": "debug", f"{prefix.title()}Nothing_Like_It": "1"}
    assert unknown_variables(settings_class, environ) == [f"{prefix.title()}Nothing_Like_It"]


def test_a_variable_read_through_an_alias_is_no_unknown() -> None:
    environ = {"INFERMODES_SERVE_INFERENCE_OUTPUT": "x", "SAGEMAKER_INFERENCE_OUTPUT": "x",
               "INFERMODES_BATCH_INSTANCE_INDEX": "0", "JOB_COMPLETION_INDEX": "0"}  # fmt: skip
    assert unknown_variables(ServeSettings, environ) == []
    assert unknown_variables(BatchSettings, environ) == []


class AliasedSettings(EnvSettings):
    """A field read only through its alias: its prefixed name is not read."""

    model_config = SettingsConfigDict(env_prefix="INFERMODES_ALIASED_")
    size: int = Field(1, validation_alias=AliasChoices("size", "INFERMODES_ALIASED_EXTENT"))


def test_a_prefixed_name_no_field_reads_is_unknown_even_if_a_field_has_that_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERMODES_ALIASED_SIZE", "5")
    assert AliasedSettings().size == 1  # ignored: what the warning is for
    environ = {"INFERMODES_ALIASED_SIZE": "5", "INFERMODES_ALIASED_EXTENT": "2"}
    assert unknown_variables(AliasedSettings, environ) == ["INFERMODES_ALIASED_SIZE"]


class EveryProcessSettings(EnvSettings):
    """A prefix that is a shorter start of every process's."""

    model_config = SettingsConfigDict(env_prefix="INFERMODES_")
    name: str = ""


def test_a_variable_under_another_class_longer_prefix_is_that_class_s_to_name() -> None:
    environ = {"INFERMODES_GATEWAY_ACESS_KEYS": "k", "INFERMODES_ASYNC_API_PORT": "1",
               "INFERMODES_NAME": "n", "INFERMODES_UP_URL": "u"}  # fmt: skip
    assert unknown_variables(EveryProcessSettings, environ) == ["INFERMODES_UP_URL"]
    assert unknown_variables(GatewaySettings, environ) == ["INFERMODES_GATEWAY_ACESS_KEYS"]


@pytest.mark.parametrize(
    ("variable", "guess"),
    [
        ("INFERMODES_GATEWAY_ACESS_KEYS", "did you mean INFERMODES_GATEWAY_ACCESS_KEYS?"),
        ("infermodes_gateway_acces_keys_file", "did you mean INFERMODES_GATEWAY_ACCESS_KEYS_FILE?"),
        ("INFERMODES_GATEWAY_NAMESPACE", "did you mean INFERMODES_GATEWAY_NAMESPACES?"),
        ("INFERMODES_GATEWAY_FOO", ""),
        ("INFERMODES_GATEWAY_NO_SUCH_SETTING", ""),
    ],
)
def test_the_guess_is_the_closest_variable_only_if_it_is_close(variable: str, guess: str) -> None:
    """Every name shares the prefix: compared whole, any two would look close."""
    assert did_you_mean(GatewaySettings, variable) == guess


def test_the_warning_is_one_line_of_names_never_values(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("INFERMODES_GATEWAY_ACESS_KEYS", "AKID:very-secret")
    monkeypatch.setenv("INFERMODES_GATEWAY_NO_SUCH_SETTING", "another-secret")
    monkeypatch.setenv("INFERMODES_WORKER_ACESS_KEYS", "a-worker-secret")
    with caplog.at_level(logging.WARNING, logger="infermodes.settings"):
        warn_of_unknown_variables(GatewaySettings())
    assert [record.getMessage() for record in caplog.records] == [
        "these INFERMODES_GATEWAY_* variables are ignored: "
        "INFERMODES_GATEWAY_ACESS_KEYS (no such setting; did you mean "
        "INFERMODES_GATEWAY_ACCESS_KEYS?); INFERMODES_GATEWAY_NO_SUCH_SETTING (no such setting)"
    ]
    assert "secret" not in caplog.text


def test_a_name_cannot_forge_a_line_of_the_log() -> None:
    environ = {"INFERMODES_GATEWAY_X\n2026-12-07 ERROR forged": "1"}
    assert unknown_variables_named(GatewaySettings, environ) == (
        "INFERMODES_GATEWAY_X\\n2026-12-07 ERROR forged (no such setting)"
    )


def test_no_warning_without_unknown_variables(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("INFERMODES_GATEWAY_PORT", "9000")
    with caplog.at_level(logging.WARNING, logger="infermodes.settings"):
        warn_of_unknown_variables(GatewaySettings())
    assert caplog.records == []


def test_a_services_link_variables_are_no_unknown_but_a_misspelt_port_is() -> None:
    """The chart's Service infermodes-gateway gave every pod of its namespace seven
    INFERMODES_GATEWAY_SERVICE_*/PORT* variables, which every gateway named at every start
    (and guessed METRICS_PORT for one): a warning on every healthy install is one to ignore."""
    links = [
        "INFERMODES_GATEWAY_SERVICE_HOST", "INFERMODES_GATEWAY_SERVICE_PORT",
        "INFERMODES_GATEWAY_SERVICE_PORT_HTTP", "INFERMODES_GATEWAY_PORT",
        "INFERMODES_GATEWAY_PORT_80_TCP", "INFERMODES_GATEWAY_PORT_80_TCP_PROTO",
        "INFERMODES_GATEWAY_PORT_80_TCP_PORT", "INFERMODES_GATEWAY_PORT_80_TCP_ADDR",
        "INFERMODES_GATEWAY_METRICS_SERVICE_HOST", "INFERMODES_GATEWAY_METRICS_PORT_9090_UDP",
    ]  # fmt: skip
    environ = dict.fromkeys([*links, "INFERMODES_GATEWAY_METRIC_PORT"], "10.0.0.1")
    assert unknown_variables(GatewaySettings, environ) == ["INFERMODES_GATEWAY_METRIC_PORT"]
    alone = {"INFERMODES_GATEWAY_PORT_80_TCP": "tcp://10.0.0.1:80"}  # no SERVICE_HOST beside it
    assert unknown_variables(GatewaySettings, alone) == ["INFERMODES_GATEWAY_PORT_80_TCP"]
