"""Native decoding of the common numeric JSON bodies, for ``codecs.decode_json``.

``json.loads`` makes a float object per value and a list per row: up to ~36 bytes of memory per
byte of body, ~220 MiB for a 6 MiB body. ``_fastjson`` (a C extension built at install time, beside
``_fastcsv``) reads the numeric shapes (rows of numbers and nulls, as lists or ``{"features":
[...]}`` objects, in a list or under ``"instances"``; one row) straight into the float32 matrix,
in two passes over the body: one to validate it and find the matrix's shape, one to fill it.
Whatever it does not take (another shape, a key beside the expected one, a string, a ragged
row, a value beyond float32, an error of any kind) is None, and the caller decodes the body with
``json.loads``, which gives the same answer or names the error: so this path decides nothing
that the codecs would decide otherwise. Without the extension every body goes that way.
"""

from __future__ import annotations

import numpy as np

try:
    from infermodes.predict import _fastjson
except ImportError:  # pragma: no cover - an install without a C compiler
    _fastjson = None  # type: ignore[assignment]

AVAILABLE = _fastjson is not None


def shape(body: bytes) -> tuple[int, int] | None:
    """(rows, width) of a body the native decoder reads whole, or None: use ``json.loads``."""
    if _fastjson is None or type(body) is not bytes:
        return None
    return _fastjson.scan(body, None)


def fill(body: bytes, rows: int, width: int) -> np.ndarray:
    """The matrix of a body ``shape`` took, with the (rows, width) it gave."""
    matrix = np.empty((rows, width), dtype=np.float32)
    if _fastjson is None or _fastjson.scan(body, matrix) != (rows, width):
        raise RuntimeError("the native JSON decoder read a body twice and differently")
    return matrix
