"""The native CSV and JSON readers read numbers the same under any process locale: their slow
path (``_decimal.h``: over 19 digits, or an exponent beyond 22) once used ``strtod``, which
reads the locale's decimal point, so that in a process where something set a comma-decimal
``LC_NUMERIC`` "1.5e30" was read as 1, silently.

The machine may have no comma-decimal locale installed, so the test compiles de_DE.UTF-8 with
``localedef`` into its own folder and points glibc there (``LOCPATH``); the child checks that
the locale took (its decimal point is a comma) before reading anything, so the test cannot pass
in the C locale by mistake: a missing ``localedef`` or locale source fails it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infermodes.predict import fastcsv, fastjson

COMMA_LOCALE = "de_DE.UTF-8"
# slow-path spellings (an exponent beyond 22, 20 digits) and a fast-path one beside them
VALUES = ["1.5e30", "12345678901234567890.5", "2.25"]

READ_UNDER_LOCALE = """
import json, locale, sys
locale.setlocale(locale.LC_NUMERIC, sys.argv[1])
assert locale.localeconv()["decimal_point"] == ",", locale.localeconv()
from infermodes.predict import fastcsv, fastjson
values = sys.argv[2].split(",")
csv = fastcsv.parse(",".join(values).encode() + b"\\n", len(values))
body = ("[[" + ",".join(values) + "]]").encode()
shape = fastjson.shape(body)
print(json.dumps({
    "csv": None if csv is None else csv.tolist(),
    "json": None if shape is None else fastjson.fill(body, *shape).tolist(),
}))
"""


@pytest.fixture(scope="module")
def comma_locale_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding de_DE.UTF-8, compiled for this test (``LOCPATH`` points glibc at it)."""
    localedef = shutil.which("localedef")
    assert localedef, "localedef (glibc's locale compiler) is needed to make a comma locale"
    folder = tmp_path_factory.mktemp("locales")
    subprocess.run(
        [localedef, "-i", "de_DE", "-f", "UTF-8", str(folder / COMMA_LOCALE)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return folder


def test_native_readers_read_decimals_alike_under_a_comma_decimal_locale(
    comma_locale_path: Path,
) -> None:
    assert fastcsv.AVAILABLE and fastjson.AVAILABLE, "the native modules are not built"
    done = subprocess.run(
        [sys.executable, "-c", READ_UNDER_LOCALE, COMMA_LOCALE, ",".join(VALUES)],
        env={**os.environ, "LOCPATH": str(comma_locale_path), "LC_ALL": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    read = json.loads(done.stdout)
    expected = np.array([[float(value) for value in VALUES]], dtype=np.float32).tolist()
    assert read == {"csv": expected, "json": expected}
