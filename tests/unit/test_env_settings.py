"""EnvSettings reads the environment as pydantic-settings did for the field types we use: the
variables pods and users already set keep meaning what they meant."""

from __future__ import annotations

import os
import re

import click
import pytest
from pydantic import AliasChoices, Field, ValidationError

from infermodes.cli import _settings_or_exit
from infermodes.settings import (
    AsyncApiSettings,
    BatchSettings,
    EnvSettings,
    GatewaySettings,
    OperatorSettings,
    ServeSettings,
    SettingsConfigDict,
    SettingsError,
    WorkerSettings,
)

BATCH = {"model_uri": "m", "input_uri": "s3://b/in/", "output_uri": "s3://b/out/"}
ENDPOINT = '{"e": {"input_path": "file:///i", "output_path": "file:///o", "failure_path": "f"}}'


@pytest.fixture(autouse=True)
def _no_infermodes_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine running the tests has set is not read here."""
    for name in list(os.environ):
        if name.upper().startswith(("INFERMODES_", "SAGEMAKER_", "JOB_COMPLETION_INDEX")):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    "variable", ["INFERMODES_SERVE_PORT", "infermodes_serve_port", "Infermodes_Serve_Port"]
)
def test_a_field_is_read_from_its_prefixed_variable_in_any_case(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "9001")
    assert ServeSettings(model_uri="m").port == 9001


def test_flags_win_over_the_environment_which_wins_over_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERMODES_SERVE_MODEL_URI", "file:///env")
    monkeypatch.setenv("INFERMODES_SERVE_PORT", "9001")
    settings = ServeSettings(port=9002)
    assert (settings.model_uri, settings.port, settings.workers) == ("file:///env", 9002, 2)


def test_a_required_field_the_environment_does_not_set_is_missing() -> None:
    with pytest.raises(ValidationError, match="model_uri\n  Field required"):
        ServeSettings()


def test_an_unknown_keyword_is_refused_and_an_unknown_variable_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERMODES_SERVE_NO_SUCH_SETTING", "1")
    assert ServeSettings(model_uri="m").port == 8080
    with pytest.raises(ValidationError, match="no_such_setting\n  Extra inputs are not permitted"):
        ServeSettings(model_uri="m", no_such_setting=1)


def test_other_classes_prefixes_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERMODES_WORKER_LOG_LEVEL", "debug")
    assert OperatorSettings().log_level == "info"


def test_an_empty_variable_is_an_empty_value_not_an_absent_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERMODES_GATEWAY_STATIC_ENDPOINTS", "")
    monkeypatch.setenv("INFERMODES_GATEWAY_GATEWAY_ID", "")
    settings = GatewaySettings()
    assert (settings.static_endpoints, settings.gateway_id) == ("", "")
    monkeypatch.setenv("INFERMODES_GATEWAY_PORT", "")
    with pytest.raises(ValidationError, match="port\n  Input should be a valid integer"):
        GatewaySettings()


@pytest.mark.parametrize(
    ("value", "allowed"), [("true", True), ("1", True), ("yes", True), ("false", False)]
)
def test_booleans_are_read_as_pydantic_reads_text(
    value: str, allowed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERMODES_SERVE_ALLOW_PICKLE", value)
    assert ServeSettings(model_uri="m").allow_pickle is allowed


@pytest.mark.parametrize(
    ("variables", "index"),
    [
        ({"JOB_COMPLETION_INDEX": "2"}, 2),
        ({"INFERMODES_BATCH_INSTANCE_INDEX": "1"}, 1),
        # aliases in their order: the prefixed name comes before Kubernetes' variable
        ({"INFERMODES_BATCH_INSTANCE_INDEX": "1", "JOB_COMPLETION_INDEX": "2"}, 1),
        ({"job_completion_index": "2"}, 2),
    ],
)
def test_alias_choices_are_variable_names_taken_as_given(
    variables: dict[str, str], index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert BatchSettings(**BATCH, instance_count=3).instance_index == index


def test_the_platforms_output_variable_is_read_after_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEMAKER_INFERENCE_OUTPUT", "probabilities")
    assert ServeSettings(model_uri="m").inference_output == "probabilities"
    monkeypatch.setenv("INFERMODES_SERVE_INFERENCE_OUTPUT", "predicted_label")
    assert ServeSettings(model_uri="m").inference_output == "predicted_label"


@pytest.mark.parametrize("keyword", ["instance_index", "JOB_COMPLETION_INDEX"])
def test_a_keyword_by_name_or_alias_wins_over_every_variable_of_its_field(
    keyword: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERMODES_BATCH_INSTANCE_INDEX", "1")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert BatchSettings(**BATCH, instance_count=3, **{keyword: 0}).instance_index == 0


def test_validators_check_what_the_environment_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    with pytest.raises(ValidationError, match="instance_index 1 must be below instance_count 1"):
        BatchSettings(**BATCH)


def test_lists_and_dicts_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERMODES_ASYNC_API_ENDPOINTS", ENDPOINT)
    monkeypatch.setenv("INFERMODES_ASYNC_API_ALLOWED_INPUT_PREFIXES", '["s3://in/"]')
    settings = AsyncApiSettings()
    assert settings.endpoints["e"].output_path == "file:///o"
    assert settings.allowed_input_prefixes == ["s3://in/"]


@pytest.mark.parametrize("prefix", ["file://", "relative/in", "http://host/in", "s3://b/x?y"])
def test_an_allowed_input_prefix_that_is_no_storage_prefix_is_refused(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    """'file://' read as no path at all: it allowed nothing before URIs were read as names,
    and every file after; neither is what was meant."""
    monkeypatch.setenv("INFERMODES_ASYNC_API_ENDPOINTS", ENDPOINT)
    monkeypatch.setenv("INFERMODES_ASYNC_API_ALLOWED_INPUT_PREFIXES", f'["{prefix}"]')
    with pytest.raises(ValidationError, match="allowed_input_prefixes"):
        AsyncApiSettings()


def test_json_of_the_wrong_shape_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERMODES_OPERATOR_NAMESPACES", '{"a": 1}')
    with pytest.raises(ValidationError, match="namespaces\n  Input should be a valid list"):
        OperatorSettings()


@pytest.mark.parametrize("value", ["a,b", "", '["a"'])
def test_bad_json_names_its_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("Infermodes_Operator_Namespaces", value)
    with pytest.raises(SettingsError, match="^Infermodes_Operator_Namespaces: not valid JSON"):
        OperatorSettings()


def test_a_flag_for_a_json_field_means_its_variable_is_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERMODES_OPERATOR_NAMESPACES", "not json")
    assert OperatorSettings(namespaces=["a"]).namespaces == ["a"]


def test_bad_json_is_a_usage_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERMODES_WORKER_SUCCESS_WEBHOOK_URLS", "http://hook")
    with pytest.raises(click.UsageError, match="INFERMODES_WORKER_SUCCESS_WEBHOOK_URLS: not"):
        _settings_or_exit(WorkerSettings, endpoint="e", model_uri="m")


def test_an_invalid_setting_is_a_usage_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERMODES_WORKER_MAX_ATTEMPTS", "0")
    # the variable that set it, which the user must fix (before: the field, max_attempts)
    with pytest.raises(
        click.UsageError, match="^INFERMODES_WORKER_MAX_ATTEMPTS: Input should be greater"
    ):
        _settings_or_exit(WorkerSettings, endpoint="e", model_uri="m")


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("INFERMODES_GATEWAY_ALLOWED_INPUT_PREFIXES", '["ftp://x"]', "'ftp://x' is not s3://"),
        ("INFERMODES_WORKER_BROKER_URL", "amqp://h/?stack_timeout=40", "60 is under twice"),
    ],
    ids=["a prefix", "a rule over two settings"],
)
def test_a_rule_over_the_whole_settings_names_the_variable_to_change(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    """A rule checked over the whole settings (a list's entries, two settings together) names
    the variable the user sets, as a field's own rule does (before: the field's name,
    allowed_input_prefixes, which is no variable)."""
    monkeypatch.setenv(variable, value)
    factory = GatewaySettings if "GATEWAY" in variable else WorkerSettings
    wanted = {
        GatewaySettings: "INFERMODES_GATEWAY_ALLOWED_INPUT_PREFIXES",
        WorkerSettings: "INFERMODES_WORKER_LIVENESS_STALL_SECONDS",
    }[factory]
    options = {"endpoint": "e", "model_uri": "m"} if factory is WorkerSettings else {}
    with pytest.raises(click.UsageError, match=f"^{wanted}: {re.escape(named)}"):
        _settings_or_exit(factory, **options)


def test_secrets_are_read_and_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERMODES_GATEWAY_ACCESS_KEYS", "AKID:hunter2")
    settings = GatewaySettings()
    assert settings.access_keys.get_secret_value() == "AKID:hunter2"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize("order", ["as written first", "other case first"])
def test_a_name_as_written_wins_over_another_case_of_it(
    monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    """A pod's env entry (the operator's, as written) over an envFrom Secret's key in another
    case, whatever order the kubelet put them in."""
    pairs = [("INFERMODES_WORKER_NAMESPACE", "mine"), ("infermodes_worker_namespace", "theirs")]
    for name, value in pairs if order == "as written first" else pairs[::-1]:
        monkeypatch.setenv(name, value)
    settings = WorkerSettings(endpoint="e", model_uri="m")
    assert settings.namespace == "mine"


def test_async_storage_prefixes_are_a_json_list_of_storage_uris(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefixes = '["s3://async/{namespace}/", "file:///srv/async/", "FILE://localhost/x", "s3://"]'
    monkeypatch.setenv("INFERMODES_GATEWAY_ASYNC_STORAGE_PREFIXES", prefixes)
    assert GatewaySettings().async_storage_prefixes[0] == "s3://async/{namespace}/"
    wrong_ones = ('["async/{namespace}/"]', '["file://host/x"]', '["http://x/"]', '["s3://b/x?y"]')
    for wrong in wrong_ones:
        monkeypatch.setenv("INFERMODES_GATEWAY_ASYNC_STORAGE_PREFIXES", wrong)
        with pytest.raises(ValueError, match="is not s3:// .any bucket."):
            GatewaySettings()


def test_inherited_fields_are_read_with_each_classs_own_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFERMODES_ASYNC_API_ENDPOINTS", ENDPOINT)
    monkeypatch.setenv("INFERMODES_ASYNC_API_MAX_INLINE_BYTES", "5")
    monkeypatch.setenv("INFERMODES_GATEWAY_MAX_INLINE_BYTES", "7")
    assert AsyncApiSettings().max_inline_bytes == 5
    assert GatewaySettings().max_inline_bytes == 7


def test_defaults_are_validated_and_schemas_built_on_first_use() -> None:
    class Checked(EnvSettings):
        count: int = Field(0, ge=1)

    assert not Checked.__pydantic_complete__  # defer_build: importing builds nothing
    with pytest.raises(ValidationError, match="count\n  Input should be greater than or equal"):
        Checked()


@pytest.mark.parametrize("by_name", [True, False])
def test_populate_by_name_also_reads_the_prefixed_name_of_an_aliased_field(
    by_name: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Aliased(EnvSettings):
        model_config = SettingsConfigDict(env_prefix="TEST_", populate_by_name=by_name)
        size: int = Field(0, validation_alias=AliasChoices("OTHER_SIZE"))

    monkeypatch.setenv("TEST_SIZE", "1")
    assert Aliased().size == (1 if by_name else 0)
    monkeypatch.setenv("OTHER_SIZE", "2")
    assert Aliased().size == 2


def test_a_log_level_is_one_of_four_in_any_case_and_a_misspelt_one_is_one_line() -> None:
    """``logging`` refused it at start with a traceback: the operator crash-looped."""
    from click.testing import CliRunner

    from infermodes.cli import main
    from infermodes.settings import OperatorSettings

    assert OperatorSettings(log_level="WARNING").log_level == "warning"
    result = CliRunner().invoke(
        main, ["operator"], env={"INFERMODES_OPERATOR_LOG_LEVEL": "verbose"}
    )
    assert result.exit_code == 2
    said = (
        "INFERMODES_OPERATOR_LOG_LEVEL: must be one of debug, info, warning, error, critical, "
        "got 'verbose'"
    )
    assert said in result.output
    assert OperatorSettings(log_level="warn").log_level == "warning"
    up = CliRunner().invoke(main, ["up", "--log-level", "loud"])
    assert up.exit_code == 2 and "--log-level" in up.output


@pytest.mark.parametrize("delays", ["[]", "[0]", "[5, -1]", "[86401]", "[1.5]", '["5s"]'])
def test_a_webhook_retry_schedule_of_no_whole_seconds_from_1_s_to_a_day_is_refused(
    delays: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No delay (a job sent again at once), or one past a day, is no retry schedule."""
    monkeypatch.setenv("INFERMODES_WORKER_WEBHOOK_RETRY_DELAYS", delays)
    with pytest.raises(ValidationError, match="webhook_retry_delays"):
        WorkerSettings(endpoint="e", model_uri="m")


def test_a_webhook_retry_schedule_is_read_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings(endpoint="e", model_uri="m").webhook_retry_delays == [5, 30, 120, 600]
    monkeypatch.setenv("INFERMODES_WORKER_WEBHOOK_RETRY_DELAYS", "[1, 2]")
    assert WorkerSettings(endpoint="e", model_uri="m").webhook_retry_delays == [1, 2]
