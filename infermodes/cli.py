"""The ``infermodes`` command. Subcommands import their process's code only when they run,
so ``infermodes serve`` pays for nothing the worker or operator needs."""

from __future__ import annotations

import sys
from typing import Any

import click


def _given(**options: Any) -> dict[str, Any]:
    """Flags the user actually gave; the rest fall through to env vars and defaults."""
    return {name: value for name, value in options.items() if value is not None}


def _settings_or_exit(factory: Any, **options: Any) -> Any:
    from pydantic import ValidationError

    try:
        return factory(**_given(**options))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise click.UsageError(problems) from None


@click.group()
@click.version_option(package_name="infermodes")
def main() -> None:
    """infermodes: real-time, serverless, async and batch inference for XGBoost models."""


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
@click.option(
    "--allow-pickle",
    is_flag=True,
    default=None,
    help="Load pickled models (runs the artifact's code; trusted sources only).",
)
@click.option("--log-level", help="debug, info, warning, error. [default info]")
def serve(**options: Any) -> None:
    """Serve one XGBoost model over HTTP (/ping, /invocations, /metrics)."""
    from infermodes.serving.runner import serve as run_server
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
def crd() -> None:
    """Print the InferenceEndpoint CustomResourceDefinition (YAML)."""
    from infermodes.operator.crd import crd_yaml

    click.echo(crd_yaml(), nl=False)
