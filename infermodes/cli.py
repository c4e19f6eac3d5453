"""The ``infermodes`` command. Subcommands import their process's code only when they run,
so ``infermodes serve`` pays for nothing the worker or operator needs."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

# Environment every infermodes process starts with, unless the user set the variable: numpy's
# OpenBLAS starts a thread per core at import and spins them (~50 ms of CPU per process) for
# linear algebra infermodes never does (XGBoost predicts); pydantic scans every installed
# package's entry points for plugins (~20 ms) that infermodes does not use. Children (server
# workers, zygote forks) inherit it.
LEAN_START_ENV = {"OPENBLAS_NUM_THREADS": "1", "PYDANTIC_DISABLE_PLUGINS": "__all__"}


def _given(**options: Any) -> dict[str, Any]:
    """Flags the user actually gave; the rest fall through to env vars and defaults."""
    return {name: value for name, value in options.items() if value is not None}


def _settings_or_exit(factory: Any, **options: Any) -> Any:
    """The settings from the flags given and the environment; what is wrong in either is a
    usage error naming the setting (or the variable), not a traceback."""
    from pydantic import ValidationError

    from infermodes.settings import SettingsError

    given = _given(**options)
    try:
        return factory(**given)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    except ValidationError as exc:
        from infermodes.endpoints.spec import spec_problems  # the one formatter, as for specs

        label = _setting_label(factory, given)
        raise click.UsageError(spec_problems(exc, label, fields=factory.model_fields)) from None


def _setting_label(factory: Any, given: dict[str, Any]) -> Callable[[str], str]:
    """A setting's error path as the user wrote the setting: the flag they gave, else the
    variable that set it, else the flag and the variable (a setting neither gave)."""
    context = click.get_current_context(silent=True)
    params = context.command.params if context else []
    flags = {p.name: max(p.opts, key=len) for p in params if isinstance(p, click.Option)}
    environ = {name.lower(): name for name in os.environ}

    def label(path: str) -> str:
        first, dot, rest = path.partition(".")
        variables = [n for n in factory.env_names(first) if n.lower() != first]
        flag = flags.get(first)
        if first in given and flag:
            shown = flag
        elif variable := next((environ[n.lower()] for n in variables if n.lower() in environ), ""):
            shown = variable
        elif flag and variables:
            shown = f"{flag} (or {variables[-1]})"
        else:
            shown = flag or (variables[0] if variables else first)
        return f"{shown}{dot}{rest}"

    return label


@click.group()
@click.version_option(package_name="infermodes")
def main() -> None:
    """infermodes: real-time, serverless, async and batch inference for XGBoost models."""
    for name, value in LEAN_START_ENV.items():
        os.environ.setdefault(name, value)


@main.command()
@click.option(
    "--model",
    "model_uri",
    help="Model URI: file://, s3:// or a path. [env INFERMODES_SERVE_MODEL_URI]",
)
@click.option("--host", help="Bind address. [default 127.0.0.1]")
@click.option("--port", type=int, help="Port. [default 8080]")
@click.option("--workers", type=int, help="Worker processes. [default 2]")
@click.option("--predict-threads", type=int, help="XGBoost threads per worker. [default 1]")
@click.option("--max-payload-bytes", type=int, help="Request body limit. [default 6 MiB]")
@click.option("--max-rows", type=int, help="Rows per request (413 beyond). [default 200000]")
@click.option(
    "--max-values", type=int, help="Rows x features per request (413 beyond). [default 16777216]"
)
@click.option(
    "--header-timeout",
    "header_timeout_seconds",
    type=float,
    help="Seconds for a request's headers to arrive (408 beyond). [default 10]",
)
@click.option(
    "--body-timeout",
    "body_timeout_seconds",
    type=float,
    help="Seconds for a request's body to arrive after its headers (408 beyond). [default 60]",
)
@click.option(
    "--max-batch-rows",
    type=int,
    help="Rows one predict call may gather from concurrent requests; 1: no batching. [default 128]",
)
@click.option(
    "--max-batch-wait-us",
    type=int,
    help="Microseconds a batch waits for more requests. [default 0: none]",
)
@click.option(
    "--allow-pickle",
    is_flag=True,
    default=None,
    help="Load pickled models (runs the artifact's code; trusted sources only).",
)
@click.option(
    "--inference-output",
    help="Selectable output keys, comma-separated, e.g. predicted_label,probabilities. "
    "[env SAGEMAKER_INFERENCE_OUTPUT too]",
)
@click.option("--log-level", help="debug, info, warning, error. [default info]")
def serve(**options: Any) -> None:
    """Serve one XGBoost model over HTTP (/ping, /invocations, /metrics)."""
    from infermodes.server.runner import serve as run_server
    from infermodes.settings import ServeSettings

    settings = _settings_or_exit(ServeSettings, **options)
    sys.exit(run_server(settings))


@main.command("operator")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Namespace to watch (repeatable). [default: all namespaces]",
)
@click.option("--image", help="Image for endpoint pods. [env INFERMODES_OPERATOR_IMAGE]")
@click.option("--resync-seconds", type=float, help="Reconcile and scale interval. [default 10]")
@click.option("--log-level", help="debug, info, warning, error. [default info]")
def operator_command(namespaces: tuple[str, ...], **options: Any) -> None:
    """Run the Kubernetes operator that reconciles InferenceEndpoint resources."""
    from infermodes.operator.handlers import run_operator
    from infermodes.settings import OperatorSettings

    if namespaces:
        options["namespaces"] = list(namespaces)
    run_operator(_settings_or_exit(OperatorSettings, **options))


@main.command()
@click.option(
    "--kind",
    type=click.Choice(["InferenceEndpoint", "InferenceModel", "InferenceEndpointConfig"]),
    default="InferenceEndpoint",
    show_default=True,
    help="Which CRD (the other two keep the platform API's models and endpoint configs).",
)
def crd(kind: str) -> None:
    """Print a CustomResourceDefinition (YAML)."""
    from infermodes.operator.crd import crd_yaml, record_crd_yaml

    click.echo(crd_yaml() if kind == "InferenceEndpoint" else record_crd_yaml(kind), nl=False)


@main.command()
@click.option(
    "--endpoint", help="Async endpoint whose queue to consume. [env INFERMODES_WORKER_ENDPOINT]"
)
@click.option("--model", "model_uri", help="Model URI: file://, s3:// or a path.")
@click.option(
    "--broker-url",
    help="amqp://... (RabbitMQ) or sqlite:///path/queue.db (the embedded queue). "
    "[default amqp://guest:guest@127.0.0.1:5672/%2F]",
)
@click.option(
    "--max-concurrent-invocations",
    type=int,
    help="Requests processed at once (the prefetch). [default 1]",
)
@click.option("--max-attempts", type=int, help="Attempts before dead-lettering. [default 3]")
@click.option(
    "--success-webhook-url",
    "success_webhook_urls",
    multiple=True,
    help="POST success notifications here too (repeatable).",
)
@click.option(
    "--error-webhook-url",
    "error_webhook_urls",
    multiple=True,
    help="POST error notifications here too (repeatable).",
)
@click.option("--metrics-port", type=int, help="Side port for /metrics; 0 disables. [default 9090]")
@click.option("--predict-threads", type=int, help="XGBoost threads per request. [default 1]")
@click.option("--log-level", help="debug, info, warning, error. [default info]")
def worker(**options: Any) -> None:
    """Process an async endpoint's queued requests (RabbitMQ or the embedded queue): predict,
    store, notify, ack."""
    from infermodes.settings import WorkerSettings
    from infermodes.workers.async_worker import run

    for name in ("success_webhook_urls", "error_webhook_urls"):
        options[name] = list(options[name]) or None
    settings = _settings_or_exit(WorkerSettings, **options)
    sys.exit(run(settings))


def _endpoint_layouts(values: tuple[str, ...], max_attempts: int | None) -> dict[str, Any] | None:
    """``--endpoint NAME=PREFIX`` -> the default layout under PREFIX."""
    from infermodes.settings import AsyncEndpoint

    if max_attempts is not None and not values:
        raise click.UsageError(
            "--max-attempts applies to --endpoint endpoints; in ENDPOINTS give each its "
            "max_attempts"
        )
    options = {} if max_attempts is None else {"max_attempts": max_attempts}
    layouts = {}
    for value in values:
        name, sep, prefix = value.partition("=")
        if not sep or not name or not prefix:
            raise click.UsageError(f"--endpoint takes NAME=STORAGE_PREFIX, got {value!r}")
        layouts[name] = AsyncEndpoint.under(prefix, **options)
    return layouts or None


@main.command("async-api")
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    help="NAME=PREFIX: accept for NAME, with input/, output/ and failure/ under PREFIX. "
    "[env INFERMODES_ASYNC_API_ENDPOINTS as JSON]",
)
@click.option(
    "--broker-url", help="RabbitMQ AMQP URL. [default amqp://guest:guest@127.0.0.1:5672/%2F]"
)
@click.option(
    "--max-attempts",
    type=int,
    help="Attempts of the --endpoint endpoints' requests; must match their workers'. [default 3]",
)
@click.option("--host", help="Bind address. [default 127.0.0.1]")
@click.option("--port", type=int, help="Port. [default 8081]")
@click.option("--max-inline-bytes", type=int, help="Inline body limit. [default 16 MiB]")
@click.option(
    "--allow-input-prefix",
    "allowed_input_prefixes",
    multiple=True,
    help="By-reference inputs must lie under one of these or the endpoint's input prefix "
    "(repeatable). [default: s3:// anywhere, file:// only under the endpoint's input prefix]",
)
@click.option("--log-level", help="debug, info, warning, error. [default info]")
def async_api(max_attempts: int | None, **options: Any) -> None:
    """Accept async invocations (POST /endpoints/NAME/async-invocations) and queue them."""
    from infermodes.gateway.async_accept import serve as run_api
    from infermodes.settings import AsyncApiSettings

    options["endpoints"] = _endpoint_layouts(options["endpoints"], max_attempts)
    options["allowed_input_prefixes"] = list(options["allowed_input_prefixes"]) or None
    settings = _settings_or_exit(AsyncApiSettings, **options)
    sys.exit(run_api(settings))


@main.command()
@click.option("--model", "model_uri", help="Model URI: file://, s3:// or a path.")
@click.option("--input", "input_uri", help="Input prefix: s3://bucket/prefix, file:// or a path.")
@click.option("--manifest", "manifest_uri", help="A manifest file instead of --input.")
@click.option("--output", "output_uri", help="Output prefix for <input key>.out objects.")
@click.option(
    "--content-type", help="text/csv, application/json, application/jsonlines, text/libsvm."
)
@click.option("--compression-type", help="None or Gzip. [default None]")
@click.option("--split-type", help="Line or None. [default Line]")
@click.option("--batch-strategy", help="MultiRecord or SingleRecord. [default MultiRecord]")
@click.option("--max-payload-in-mb", type=int, help="Mini-batch size cap, 0..100. [default 6]")
@click.option("--max-concurrent-transforms", type=int, help="Mini-batches in flight. [default 1]")
@click.option("--accept", help="text/csv, application/json or application/jsonlines.")
@click.option("--assemble-with", help="Line or None. [default Line]")
@click.option("--input-filter", help="JSONPath of the model's input, e.g. '$[1:]'. [default $]")
@click.option("--output-filter", help="JSONPath of what is written. [default $]")
@click.option("--join-source", help="None or Input. [default None]")
@click.option("--invocations-max-retries", type=int, help="Retries per mini-batch. [default 3]")
@click.option(
    "--invocations-timeout-in-seconds", type=float, help="Per mini-batch attempt. [default 600]"
)
@click.option(
    "--instance-index", type=int, help="This instance's index. [env JOB_COMPLETION_INDEX; 0]"
)
@click.option("--instance-count", type=int, help="Instances sharing the input. [default 1]")
@click.option(
    "--split-min-bytes",
    type=int,
    help="Line objects this large (and over their share) are split over instances. [64 MiB]",
)
@click.option("--predict-threads", type=int, help="XGBoost threads per mini-batch. [default 1]")
@click.option("--metrics-port", type=int, help="Side port for /metrics; 0 disables. [default 9090]")
@click.option("--allow-pickle", is_flag=True, default=None, help="Load pickled models.")
@click.option("--log-level", help="debug, info, warning, error. [default info]")
def batch(manifest_uri: str | None, **options: Any) -> None:
    """Transform every object under an input prefix into <key>.out objects (one instance)."""
    gc.disable()  # until the runner freezes what start-up made: imports allocate, nothing dies
    from infermodes.settings import BatchSettings
    from infermodes.workers.batch.runner import run

    if manifest_uri is not None:
        if options["input_uri"] is not None:
            raise click.UsageError("give --input or --manifest, not both")
        options.update(input_uri=manifest_uri, input_data_type="ManifestFile")
    sys.exit(run(_settings_or_exit(BatchSettings, **options)))


@main.command()
@click.option("--host", help="Bind address. [default 127.0.0.1]")
@click.option("--port", type=int, help="Port. [default 8090]")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Namespace whose endpoints to serve (repeatable). [default: the gateway's own]",
)
@click.option(
    "--static-endpoints",
    help="JSON file of endpoints and replica addresses, instead of Kubernetes.",
)
@click.option("--invocation-timeout-seconds", type=float, help="Per invocation. [default 60]")
@click.option("--drain-delay-seconds", type=float, help="Accept this long after SIGTERM. [0]")
@click.option("--log-level", help="debug, info, warning, error. [default info]")
def gateway(namespaces: tuple[str, ...], **options: Any) -> None:
    """The front door: POST /endpoints/NAME/invocations to realtime and serverless endpoints."""
    from infermodes.gateway.app import serve as run_gateway
    from infermodes.settings import GatewaySettings

    if namespaces:
        options["namespaces"] = list(namespaces)
    sys.exit(run_gateway(_settings_or_exit(GatewaySettings, **options)))


DEFAULT_UP_PORT = 8080
DEFAULT_UP_STATE_DIR = Path(".infermodes")
UP_TOKEN_FILE_ENV = "INFERMODES_UP_TOKEN_FILE"  # noqa: S105  # a variable's name
DEFAULT_UP_TOKEN_FILE = DEFAULT_UP_STATE_DIR / "token"  # where up writes it: local/access.py
MAX_NOTIFICATION_PAGES = 100_000  # of 1,000 each: a bound, not a limit anyone meets


@main.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_UP_PORT,
    show_default=True,
    help="Port.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_UP_STATE_DIR,
    show_default=True,
    help="Endpoints, the queue, logs and batch summaries live here.",
)
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    # a str: as a Path, ./- would be - (standard input)
    type=click.Path(exists=True, allow_dash=True, path_type=str),
    help="InferenceEndpoint YAML file or directory to apply at start (repeatable), or - for "
    "standard input.",
)
@click.option(
    "--broker-url",
    help="amqp://... : async requests go to RabbitMQ instead of the embedded queue.",
)
@click.option(
    "--management-url",
    help="RabbitMQ's management API (http://user:pass@host:15672), for in-flight figures.",
)
@click.option(
    "--invocation-timeout-seconds",
    type=float,
    help="How long one invocation may take, a cold start's wait included. [default 60]",
)
@click.option("--log-level", default="info", help="debug, info, warning, error.")
def up(
    port: int,
    state_dir: Path,
    files: tuple[str, ...],
    broker_url: str | None,
    management_url: str | None,
    invocation_timeout_seconds: float | None,
    log_level: str,
) -> None:
    """Run endpoints of every mode on this machine: one port, local processes, no cluster."""
    from infermodes.errors import BrokerUnavailable
    from infermodes.local.manifests import ManifestError, given_source
    from infermodes.settings import log_level_of

    try:
        log_level = log_level_of(log_level)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--log-level") from None
    from infermodes.local.up import StateDirUnusable, UpGatewaySettings, gateway_options
    from infermodes.local.up import serve as run_up
    from infermodes.queueing.connect import broker_from_url

    settings = _settings_or_exit(
        UpGatewaySettings,
        **gateway_options(port, log_level),
        invocation_timeout_seconds=invocation_timeout_seconds,
    )

    dashes = files.count("-")
    if dashes > 1:  # the second would read nothing: its end is reached
        raise click.BadParameter(
            f"-f - is given {dashes} times: standard input is read once", param_hint="-f"
        )
    if broker_url is None and management_url is not None:  # else silently unused
        raise click.UsageError(
            "--management-url is RabbitMQ's management API: it goes with --broker-url (the "
            "embedded queue counts its requests itself)"
        )
    if broker_url is not None:
        try:
            broker_from_url(broker_url, management_url)  # only parses the URL
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--broker-url") from None
    try:
        sources = [given_source(file) for file in files]
        code = run_up(settings, state_dir, sources, broker_url, management_url)
    except (ManifestError, StateDirUnusable) as exc:
        raise click.UsageError(str(exc)) from None
    except BrokerUnavailable as exc:  # its queue file in the state dir
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


MAX_ERROR_TEXT = 500  # of an error answer that is not JSON: a proxy's HTML page, say


def _up_client(url: str) -> Any:
    from infermodes.local.client import Client

    return Client(url, Path(os.environ.get(UP_TOKEN_FILE_ENV) or DEFAULT_UP_TOKEN_FILE))


def _up_call(action: Any) -> Any:
    """Run a request to ``up``; its errors (not running, refused) end the command clearly."""
    from infermodes.local.client import UpError

    try:
        return action()
    except UpError as exc:
        raise click.ClickException(str(exc)) from None


def _endpoint_name(ctx: click.Context, param: click.Parameter, name: str | None) -> str | None:
    """A NAME goes into the request's path: one that no endpoint can have (a ``/``, a dot
    segment) would name another route or endpoint, so it is refused before any request. The
    platform API's rule, which also admits every manifest's name."""
    from infermodes.platform.translate import MAX_PLATFORM_NAME, PLATFORM_NAME

    if name is None or (len(name) <= MAX_PLATFORM_NAME and PLATFORM_NAME.fullmatch(name)):
        return name
    raise click.BadParameter(
        f"{name!r} is not an endpoint name (letters, digits and '-', at most "
        f"{MAX_PLATFORM_NAME} characters)"
    )


_up_url = click.option(
    "--url",
    envvar="INFERMODES_UP_URL",
    default=f"http://127.0.0.1:{DEFAULT_UP_PORT}",
    show_default=True,
    help="Where infermodes up listens (the token it needs: the file INFERMODES_UP_TOKEN_FILE "
    "names, by default .infermodes/token). [env INFERMODES_UP_URL]",
)


@main.command()
@click.option(
    "-f",
    "--filename",
    "path",
    required=True,
    # a str: as a Path, ./- would be - (standard input)
    type=click.Path(exists=True, allow_dash=True, path_type=str),
    help="InferenceEndpoint YAML file or directory, or - for standard input.",
)
@_up_url
def apply(path: str, url: str) -> None:
    """Create or update endpoints on a running `infermodes up`."""
    from infermodes.local.manifests import given_source

    applied, skipped = _up_call(lambda: _up_client(url).apply(given_source(path)))
    for note in skipped:
        click.echo(f"Warning: {note}", err=True)
    for endpoint in applied:
        click.echo(f"inferenceendpoint/{endpoint['name']} {endpoint['result']}")


@main.command()
@click.argument("name", required=False, callback=_endpoint_name)
@_up_url
def get(name: str | None, url: str) -> None:
    """List endpoints (the columns of `kubectl get ie`)."""
    from infermodes.local.client import row, table

    client = _up_client(url)
    if name:
        items = [_up_call(lambda: client.api("GET", f"/endpoints/{name}"))]
    else:
        items = _up_call(lambda: client.api("GET", "/endpoints"))["items"]
    click.echo(table([row(item) for item in items]))


@main.command()
@click.argument("name", callback=_endpoint_name)
@_up_url
def describe(name: str, url: str) -> None:
    """Show an endpoint: status, processes, events and the URL to call."""
    from infermodes.local.client import describe as text

    click.echo(text(_up_call(lambda: _up_client(url).api("GET", f"/endpoints/{name}"))))


@main.command()
@click.argument("name", callback=_endpoint_name)
@_up_url
def delete(name: str, url: str) -> None:
    """Delete an endpoint and stop its processes."""
    answer = _up_call(lambda: _up_client(url).api("DELETE", f"/endpoints/{name}"))
    click.echo(f"inferenceendpoint/{name} deleted")
    waiting = answer.get("waiting", 0)
    if waiting != 0:
        said = "an unknown number of" if waiting is None else str(waiting)
        click.echo(f"Warning: {said} accepted request(s) wait in its queue: they stay there "
                   f"and are processed once an endpoint named {name} is applied again",
                   err=True)  # fmt: skip


def error_line(response: Any) -> str:
    """An error answer in one line: its code and message (the runtime's and the platform's
    error shapes), its status and the request id a support ticket quotes; else its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    status = f"HTTP {response.status_code}"
    request_id = response.headers.get("x-amzn-requestid")
    about = f"({status}, request {request_id})" if request_id else f"({status})"
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = (response.headers.get("x-amzn-errortype") or body.get("__type")
                or body.get("error") or "Error")  # fmt: skip
        return f"{code}: {' '.join(body['message'].split())} {about}"
    text = " ".join(response.text.split())[:MAX_ERROR_TEXT]
    return f"{text or 'no message'} {about}"


@main.command()
@click.argument("name", callback=_endpoint_name)
@click.option("--data", required=True, help="The request body, or @FILE to read it from a file.")
@click.option("--content-type", default="text/csv", show_default=True)
@click.option("--accept", help="text/csv, application/json or application/jsonlines.")
@click.option("--async", "use_async", is_flag=True, help="Queue it (an async endpoint).")
@_up_url
def invoke(
    name: str, data: str, content_type: str, accept: str | None, use_async: bool, url: str
) -> None:
    """Call an endpoint; prints the answer (for --async: the inference id and output location)."""
    try:
        body = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
    except OSError as exc:
        raise click.BadParameter(f"{data[1:]}: {exc.strerror}", param_hint="--data") from None
    path = "async-invocations" if use_async else "invocations"
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    from infermodes.local.client import INVOKE_TIMEOUT_SECONDS

    route = f"/endpoints/{name}/{path}"
    client = _up_client(url)
    response = _up_call(
        lambda: client.request("POST", route, INVOKE_TIMEOUT_SECONDS, content=body, headers=headers)
    )
    if response.status_code >= 400:
        # the gateway names the route this endpoint's mode takes; the CLI's user wants the flag
        other = "invocations" if use_async else "async-invocations"
        hint = ""
        if response.status_code == 400 and f"use /endpoints/{name}/{other}" in response.text:
            hint = (
                f"; {name} is not an async endpoint: call it without --async"
                if use_async
                else f"; {name} is an async endpoint: call it with --async"
            )
        raise click.ClickException(f"{error_line(response)}{hint}")
    click.echo(response.text.rstrip("\n"))


@main.command()
@click.argument("name", callback=_endpoint_name)
@_up_url
def logs(name: str, url: str) -> None:
    """Print the end of each process log of an endpoint."""
    click.echo(_up_call(lambda: _up_client(url).api("GET", f"/endpoints/{name}/logs")), nl=False)


@main.command()
@click.argument("topic", default="#")
@click.option("--after", type=int, default=0, help="Only notifications after this id.")
@_up_url
def notifications(topic: str, after: int, url: str) -> None:
    """Print async notifications of `infermodes up` (TOPIC: e.g. NAME.*, #.error; default #),
    one JSON object a line, every one there is now; give the last id as --after to read on
    later."""
    import json

    for _ in range(MAX_NOTIFICATION_PAGES):  # the API answers a page at a time
        params = {"topic": topic, "after": after}
        found = _up_call(lambda p=params: _up_client(url).api("GET", "/notifications", params=p))
        if not found["items"]:
            return
        for item in found["items"]:
            click.echo(json.dumps(item, separators=(",", ":")))
        after = int(found["items"][-1]["id"])
