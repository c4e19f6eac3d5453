"""Build (once) and cache the separate virtual environment that runs the MLServer peer.

MLServer must not share the project's environment: its dependencies would then shape what we
measure for infermodes. The environment is cached because building it takes minutes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

DEFAULT_DIR = Path.home() / ".cache" / "infermodes" / "bench-mlserver-venv"
MLSERVER_VERSION = "1.7.1"
# Bump when the recipe below changes, so a cached environment is rebuilt.
RECIPE = f"mlserver=={MLSERVER_VERSION};xgboost-cpu;uvloop==0.21.0;py-spy;v1"


def _pip(venv: Path, *args: str) -> None:
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
    )


def ensure(venv: Path = DEFAULT_DIR) -> Path:
    """Return the environment's python, building the environment if it is missing or stale."""
    stamp = venv / ".infermodes-recipe"
    python = venv / "bin" / "python"
    if stamp.exists() and stamp.read_text() == RECIPE and python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    _pip(
        venv,
        "install",
        f"mlserver=={MLSERVER_VERSION}",
        f"mlserver-xgboost=={MLSERVER_VERSION}",
        "uvloop==0.21.0",
        "py-spy",
    )
    # mlserver-xgboost depends on the full xgboost wheel, which drags in nvidia-nccl-cu12
    # (~600 MB). Swap it for the CPU-only wheel, as infermodes uses; MLServer works with it.
    _pip(venv, "uninstall", "-y", "xgboost", "nvidia-nccl-cu12")
    _pip(venv, "install", "--no-deps", "xgboost-cpu")
    # MLServer 1.7.1 fails every inference with uvloop >= 0.22.
    _pip(venv, "install", "uvloop==0.21.0")
    stamp.write_text(RECIPE)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    print(ensure(parser.parse_args().dir))


if __name__ == "__main__":
    main()
