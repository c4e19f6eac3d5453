"""Build hook: compile the C extensions ``infermodes/predict/_fastcsv.c`` (native CSV parsing and
formatting), ``infermodes/predict/_fastjson.c`` (numeric JSON bodies into float32) and
``infermodes/predict/_trees.c`` (the exact tree evaluator) with the machine's C compiler while
the package is installed.

An editable install (``scripts/install.sh``) puts each module beside its source (replacing any
earlier one whole); a wheel carries them (and is then tagged for this interpreter and platform).
Where no C compiler or no Python headers exist (a slim container image) the install goes on
without them and ``infermodes.predict.fastcsv``, ``fastjson`` and ``trees`` use their
fallbacks (the codecs, Python's JSON parser, XGBoost's own predict): the same output, slower.
A compiler that fails on a source is an error.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = (
    "infermodes/predict/_fastcsv.c",
    "infermodes/predict/_fastjson.c",
    "infermodes/predict/_trees.c",
)


class NativeBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        compiler = shlex.split(os.environ.get("CC", "")) or [shutil.which("gcc") or "cc"]
        include = sysconfig.get_paths()["include"]
        if not shutil.which(compiler[0]) or not Path(include, "Python.h").exists():
            self.app.display_warning(
                f"infermodes: no C compiler or no Python headers ({include}): installing "
                "without the native tree evaluator, JSON decoder and CSV module (slower, same "
                "output)"
            )
            return
        for source in SOURCES:
            self._build(compiler, include, Path(self.root, source), version, build_data)

    def _build(
        self,
        compiler: list[str],
        include: str,
        source: Path,
        version: str,
        build_data: dict[str, Any],
    ) -> None:
        # no -ffast-math or the like: the tree evaluator's float32 sums must stay in order
        name = source.stem + sysconfig.get_config_var("EXT_SUFFIX")
        built = Path(tempfile.mkdtemp(prefix="infermodes-build-"), name)
        command = [*compiler, "-O2", "-shared", "-fPIC", "-I", include, "-o", str(built)]
        subprocess.run([*command, str(source), "-lm"], check=True)
        if version == "editable":
            # replaced whole, never rewritten in place: processes of a shared checkout may
            # have the old one loaded
            partial = source.with_name(f".{name}.{os.getpid()}")
            shutil.copyfile(built, partial)
            os.replace(partial, source.with_name(name))
        else:
            build_data["force_include"][str(built)] = f"infermodes/predict/{name}"
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
