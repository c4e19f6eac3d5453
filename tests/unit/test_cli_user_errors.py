"""Mistakes a user makes on the command line of the ``up`` CLI end with a message naming
the problem and a non-zero exit code, not a traceback, and before any request is sent."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from infermodes.cli import main
from infermodes.local.manifests import ManifestError, parse_text

NOWHERE = "http://127.0.0.1:1"  # nothing listens: these mistakes are caught before a request


def test_invoke_with_a_data_file_that_does_not_exist_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "rows.csv"
    result = CliRunner().invoke(main, ["invoke", "abalone", "--data", f"@{missing}",
                                       "--url", NOWHERE])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not a FileNotFoundError's traceback
    assert str(missing) in result.output and "--data" in result.output


def test_apply_of_a_folder_without_manifests_says_so(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "realtime.yaml").write_text("kind: InferenceEndpoint\n")
    (tmp_path / "notes.txt").write_text("not a manifest\n")
    result = CliRunner().invoke(main, ["apply", "-f", str(tmp_path), "--url", NOWHERE])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"{tmp_path}: no .yaml, .yml or .json file in it" in result.output


class _JsonAnswer(BaseHTTPRequestHandler):
    """Answers every request with one JSON error, as another server on the port would."""

    status = 404

    def message(self) -> tuple[str, str]:
        return "NotFound", f"no route {self.path}"

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        error, message = self.message()
        body = json.dumps({"error": error, "message": message}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A server on a free loopback port, its URL; shut down when the block ends."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_get_at_a_url_that_is_not_up_says_so() -> None:
    """--url (or INFERMODES_UP_URL) at another server's port, a model server's say, was
    answered 'Error: no route /_infermodes/endpoints', which named no mistake."""
    with serving(_JsonAnswer) as url:
        result = CliRunner().invoke(main, ["get", "--url", url])
    assert result.exit_code == 1, result.output
    assert f"{url} is not infermodes up" in result.output
    assert "--url" in result.output and "INFERMODES_UP_URL" in result.output


class _OtherRoute(_JsonAnswer):
    """The gateway's 400 for a route the endpoint's mode does not take."""

    status = 400

    def message(self) -> tuple[str, str]:
        name = self.path.split("/")[2]
        use = "invocations" if self.path.endswith("/async-invocations") else "async-invocations"
        mode = "realtime" if use == "invocations" else "async"
        return "ValidationError", (
            f"endpoint {name} is a {mode} endpoint: use /endpoints/{name}/{use}"
        )


def test_invoke_on_the_other_route_says_which_flag_to_use() -> None:
    """The gateway's message names a route; the CLI's user wants the flag."""
    with serving(_OtherRoute) as url:
        sync = CliRunner().invoke(main, ["invoke", "queue", "--data", "1", "--url", url])
        queued = CliRunner().invoke(main, ["invoke", "rt", "--data", "1", "--async", "--url", url])
    assert sync.exit_code == 1 and "an async endpoint: call it with --async" in sync.output
    assert queued.exit_code == 1 and "not an async endpoint: call it without --async" in (
        queued.output
    )


def test_a_bad_setting_is_named_as_the_user_wrote_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flag by its flag, a variable by its name, a missing one by both: 'workers:' or
    'input_uri: Field required' named neither the flag nor the variable to fix."""
    for name in ("INFERMODES_SERVE_WORKERS", "INFERMODES_SERVE_MODEL_URI", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    flag = CliRunner().invoke(main, ["serve", "--model", "m", "--workers", "0"])
    assert flag.exit_code == 2 and "Error: --workers: Input should be greater" in flag.output
    variable = CliRunner().invoke(
        main, ["serve", "--model", "m"], env={"INFERMODES_SERVE_WORKERS": "abc"}
    )
    assert variable.exit_code == 2
    assert "Error: INFERMODES_SERVE_WORKERS: Input should be a valid integer" in variable.output
    missing = CliRunner().invoke(main, ["batch", "--model", "m", "--output", "/tmp/o"])
    assert missing.exit_code == 2
    assert "Error: --input (or INFERMODES_BATCH_INPUT_URI): Field required" in missing.output
    split = CliRunner().invoke(main, ["batch", "--model", "m", "--input", "/i", "--output", "/o",
                                      "--split-type", "RecordIO"])  # fmt: skip
    assert "Error: --split-type: Input should be 'None' or 'Line'" in split.output
    index = CliRunner().invoke(
        main, ["batch", "--model", "m", "--input", "/i", "--output", "/o"],
        env={"JOB_COMPLETION_INDEX": "x"},
    )  # fmt: skip
    assert "Error: JOB_COMPLETION_INDEX: Input should be a valid integer" in index.output


def test_an_async_api_endpoint_name_no_worker_could_take_is_refused_at_start(
    tmp_path: Path,
) -> None:
    """The worker refuses a name that is no DNS label (its queue's, its pods'): the API took
    it and queued requests nothing could ever consume."""
    result = CliRunner().invoke(main, ["async-api", "--endpoint", f"Bad_Name=file://{tmp_path}",
                                       "--port", "1"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "Bad_Name" in result.output and "should match pattern" in result.output


class _Recording(BaseHTTPRequestHandler):
    """Answers every request 200 with an empty JSON object, and records its path: as up
    would answer a request for an endpoint that exists."""

    paths: ClassVar[list[str]] = []

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_DELETE = answer

    def log_message(self, *args: object) -> None:
        pass


def test_a_name_no_endpoint_can_have_is_refused_before_a_request() -> None:
    """The name went into the request's path as typed: `delete x/../abalone` deleted
    abalone (the path normalised to /endpoints/abalone), `describe abalone/logs` ended in a
    traceback, `describe a/b` said up was not running at the URL."""
    commands = [["get"], ["describe"], ["delete"], ["logs"], ["invoke", "--data", "1"]]
    _Recording.paths = []
    with serving(_Recording) as url:
        for command in commands:
            for name in ("x/../abalone", "..", "abalone/logs", "a?b", "a b", ""):
                result = CliRunner().invoke(main, [command[0], name, *command[1:], "--url", url])
                assert result.exit_code == 2, (command, name, result.output)
                assert isinstance(result.exception, SystemExit)
                assert f"{name!r} is not an endpoint name" in result.output
    assert _Recording.paths == []


def test_apply_of_a_folder_with_a_bad_file_applies_none_of_it(tmp_path: Path) -> None:
    """The files went one by one: those before the bad one were applied, the user told only
    of the error, and those after it were not; as ``up -f`` does, every file is checked
    before any is sent."""
    good = "apiVersion: infermodes.dev/v1alpha1\nkind: InferenceEndpoint\nmetadata: {name: %s}\n"
    good += "spec: {mode: realtime, model: {uri: 'file:///m/model.tar.gz'}, realtime: {}}\n"
    (tmp_path / "a.yaml").write_text(good % "first")
    (tmp_path / "b.yaml").write_text("spec: [\n")
    (tmp_path / "c.yaml").write_text(good % "last")
    _Recording.paths = []
    with serving(_Recording) as url:
        result = CliRunner().invoke(main, ["apply", "-f", str(tmp_path), "--url", url])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {tmp_path / 'b.yaml'}: not valid YAML")
    assert _Recording.paths == []


class _ModelError(_JsonAnswer):
    """The gateway's 424 for a row the model server refused, with its request id."""

    status = 424

    def message(self) -> tuple[str, str]:
        return "ModelError", 'endpoint rt: the model answered 400: row 1: "x" is not a number'

    def end_headers(self) -> None:
        self.send_header("x-amzn-ErrorType", "ModelError")
        self.send_header("x-amzn-RequestId", "5a0c1d4e-0000-4000-8000-000000000001")
        super().end_headers()


def test_an_invocations_error_is_one_line_naming_its_code_message_and_request() -> None:
    """The JSON body was printed as received ('Error: 424: {"error": ...}'): the user wants
    the error's code and message, and the request id a ticket quotes."""
    with serving(_ModelError) as url:
        result = CliRunner().invoke(main, ["invoke", "rt", "--data", "1,x", "--url", url])
    assert result.exit_code == 1, result.output
    assert result.output == (
        'Error: ModelError: endpoint rt: the model answered 400: row 1: "x" is not a number '
        "(HTTP 424, request 5a0c1d4e-0000-4000-8000-000000000001)\n"
    )


def test_a_manifest_that_is_not_yaml_is_one_line_saying_where() -> None:
    """What ``apply`` and ``up -f`` print for it: the YAML parser's own report spans several
    lines, with a caret under an empty one."""
    with pytest.raises(ManifestError) as refused:
        parse_text("kind: InferenceEndpoint\nspec: [\n", "bad.yaml")
    [line] = str(refused.value).splitlines()
    assert line.startswith("bad.yaml: not valid YAML: "), line
    assert line.endswith("(line 3, column 1)"), line


def test_a_management_url_without_a_broker_url_is_refused(tmp_path: Path) -> None:
    """It was ignored: ``up`` ran on the embedded queue, the user believing RabbitMQ's figures
    were read. (Its port is taken, so that before the check ``up`` ended at once.)"""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(main, ["up", "--state-dir", str(tmp_path / "state"),
                                           "--port", port,
                                           "--management-url", "http://127.0.0.1:1"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--management-url" in result.output and "--broker-url" in result.output
    assert not (tmp_path / "state").exists()  # refused before anything starts


# every float flag, each command's required flags given
FLOAT_FLAGS = [
    ["up", "--invocation-timeout-seconds"],
    ["gateway", "--invocation-timeout-seconds"],
    ["gateway", "--drain-delay-seconds"],
    ["serve", "--model", "m", "--header-timeout"],
    ["serve", "--model", "m", "--body-timeout"],
    ["operator", "--resync-seconds"],
    [
        "batch",
        "--model",
        "m",
        "--input",
        "/i",
        "--output",
        "/o",
        "--invocations-timeout-in-seconds",
    ],
]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("args", FLOAT_FLAGS, ids=lambda args: f"{args[0]} {args[-1]}")
def test_a_float_flag_that_is_not_a_finite_number_is_named_as_such(
    args: list[str], value: str, tmp_path: Path
) -> None:
    """``nan`` was refused as beyond the upper bound (every comparison with NaN is false), and
    ``inf`` too: the message named a bound, not the problem."""
    result = CliRunner().invoke(main, [*args, value], env={"JOB_COMPLETION_INDEX": None})
    assert result.exit_code == 2, result.output
    assert f"Error: {args[-1]}: Input should be a finite number" in result.output
    assert "less than" not in result.output and "greater than" not in result.output


def test_a_float_variable_that_is_not_a_finite_number_is_named_as_such() -> None:
    result = CliRunner().invoke(
        main, ["gateway"], env={"INFERMODES_GATEWAY_INVOCATION_TIMEOUT_SECONDS": "NaN"}
    )
    assert result.exit_code == 2, result.output
    assert (
        "Error: INFERMODES_GATEWAY_INVOCATION_TIMEOUT_SECONDS: Input should be a finite number"
        in result.output
    )
