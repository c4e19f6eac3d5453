"""Request and response codecs of the managed platform's XGBoost container contract.

Inputs (``text/csv``, ``application/json``, ``text/libsvm``) decode to a float32 matrix with
NaN for missing values; predictions encode to ``text/csv`` or ``application/json``. Every
decoding error names the row and column (1-based), because a 400 that says only "bad input"
sends users hunting. The one-row CSV case is the hot path: no pandas, no csv module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from infermodes.errors import InvalidInput, NotAcceptable, UnsupportedContentType

CSV = "text/csv"
JSON = "application/json"
LIBSVM = "text/libsvm"
JSONLINES = "application/jsonlines"
INPUT_TYPES = (CSV, JSON, LIBSVM)
OUTPUT_TYPES = (CSV, JSON)
_ALIASES = {"application/x-libsvm": LIBSVM, "text/x-libsvm": LIBSVM, "application/csv": CSV}


def media_type(header: str | None, default: str = CSV) -> str:
    """``"text/csv; charset=utf-8"`` -> ``"text/csv"``; a missing header means ``default``."""
    if not header:
        return default
    base = header.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base) or default


def content_type_of(header: str | None) -> str:
    kind = media_type(header)
    if kind not in INPUT_TYPES:
        raise UnsupportedContentType(
            f"unsupported content type {kind!r}; use one of {', '.join(INPUT_TYPES)}"
        )
    return kind


def accept_of(header: str | None) -> str:
    """Pick the first acceptable output type from an Accept header (CSV when absent or */*)."""
    if not header:
        return CSV
    for part in header.split(","):
        kind = media_type(part)
        if kind in ("*/*", "text/*"):
            return CSV
        if kind == "application/*":
            return JSON
        if kind in OUTPUT_TYPES:
            return kind
    raise NotAcceptable(f"cannot produce {header!r}; accept one of {', '.join(OUTPUT_TYPES)}")


def _number(token: bytes | str, row: int, column: int) -> float:
    token = token.strip()
    if not token:
        return math.nan
    try:
        return float(token)
    except ValueError:
        shown = token.decode("utf-8", "replace") if isinstance(token, bytes) else token
        raise InvalidInput(
            f"row {row}, column {column}: cannot parse {shown[:40]!r} as a number"
        ) from None


def _check_width(width: int, num_features: int | None, row: int) -> None:
    if num_features is not None and width != num_features:
        raise InvalidInput(f"row {row}: expected {num_features} features, got {width}")


def decode_csv(body: bytes, num_features: int | None = None) -> np.ndarray:
    """CSV without a header; empty fields are missing values."""
    if b"\n" not in body.rstrip(b"\r\n"):
        line = body.strip()
        if not line:
            raise InvalidInput("empty request body: expected at least one CSV row")
        fields = line.split(b",")
        _check_width(len(fields), num_features, 1)
        try:
            values = [float(field) if field.strip() else math.nan for field in fields]
        except ValueError:
            values = [_number(field, 1, col) for col, field in enumerate(fields, 1)]
        return np.array(values, dtype=np.float32).reshape(1, -1)
    rows: list[list[float]] = []
    width = num_features
    for index, raw_line in enumerate(body.splitlines(), 1):
        line = raw_line.strip()
        if not line:
            continue
        fields = line.split(b",")
        if width is None:
            width = len(fields)
        _check_width(len(fields), width, index)
        rows.append([_number(field, index, col) for col, field in enumerate(fields, 1)])
    if not rows:
        raise InvalidInput("empty request body: expected at least one CSV row")
    return np.array(rows, dtype=np.float32)


def _json_row(row: object, index: int) -> list[float]:
    if isinstance(row, dict):
        if "features" not in row:
            raise InvalidInput(f"row {index}: an object row needs a 'features' list")
        row = row["features"]
    if not isinstance(row, list):
        raise InvalidInput(f"row {index}: expected a list of numbers, got {type(row).__name__}")
    values = []
    for column, value in enumerate(row, 1):
        if value is None:
            values.append(math.nan)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(
                f"row {index}, column {column}: expected a number, got {json.dumps(value)[:40]}"
            )
        else:
            values.append(float(value))
    return values


def decode_json(body: bytes, num_features: int | None = None) -> np.ndarray:
    """``{"instances": [[...], ...]}``, ``{"instances": [{"features": [...]}]}``, a list of
    rows, one row, or ``{"features": [...]}``."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if isinstance(document, dict):
        if "instances" in document:
            rows = document["instances"]
        elif "features" in document:
            rows = [document]
        else:
            raise InvalidInput("JSON object needs an 'instances' list (or 'features')")
        if not isinstance(rows, list):
            raise InvalidInput("'instances' must be a list of rows")
    elif isinstance(document, list):
        is_one_row = bool(document) and not isinstance(document[0], list | dict)
        rows = [document] if is_one_row else document
    else:
        raise InvalidInput("JSON body must be an object with 'instances' or a list of rows")
    if not rows:
        raise InvalidInput("no rows in the JSON body")
    matrix = [_json_row(row, index) for index, row in enumerate(rows, 1)]
    width = num_features if num_features is not None else len(matrix[0])
    for index, values in enumerate(matrix, 1):
        _check_width(len(values), width, index)
    return np.array(matrix, dtype=np.float32)


def decode_libsvm(body: bytes, num_features: int | None = None) -> np.ndarray:
    """``[label] index:value ...`` per line with zero-based feature indices, as XGBoost reads
    libsvm; a leading token without ``:`` is a label and is ignored; absent features are missing."""
    parsed: list[dict[int, float]] = []
    highest = -1
    for index, raw_line in enumerate(body.splitlines(), 1):
        tokens = raw_line.split()
        if not tokens:
            continue
        if b":" not in tokens[0]:
            tokens = tokens[1:]
        row: dict[int, float] = {}
        for column, token in enumerate(tokens, 1):
            feature, sep, text = token.partition(b":")
            if not sep or not feature.isdigit():
                raise InvalidInput(
                    f"row {index}, column {column}: expected index:value, got {token[:40]!r}"
                )
            position = int(feature)
            if num_features is not None and position >= num_features:
                raise InvalidInput(
                    f"row {index}, column {column}: feature index {position} is out of range; "
                    f"expected {num_features} features (indices 0..{num_features - 1})"
                )
            row[position] = _number(text, index, column)
            highest = max(highest, position)
        parsed.append(row)
    if not parsed:
        raise InvalidInput("empty request body: expected at least one libsvm row")
    width = num_features if num_features is not None else highest + 1
    matrix = np.full((len(parsed), width), np.nan, dtype=np.float32)
    for row_index, row in enumerate(parsed):
        for position, value in row.items():
            matrix[row_index, position] = value
    return matrix


_DECODERS = {CSV: decode_csv, JSON: decode_json, LIBSVM: decode_libsvm}


def decode(body: bytes, content_type: str, num_features: int | None = None) -> np.ndarray:
    """Decode a body of a known input type (see ``content_type_of``)."""
    return _DECODERS[content_type](body, num_features)


def _format(value: float) -> str:
    return repr(float(value))


def encode(predictions: np.ndarray, accept: str) -> bytes:
    """One prediction per input row, in order. Multi-output rows become CSV rows or JSON lists."""
    if accept == JSON:
        scores: Sequence[object] = predictions.tolist()
        return json.dumps({"predictions": [{"score": score} for score in scores]}).encode()
    if predictions.ndim == 1:
        return "\n".join(map(_format, predictions.tolist())).encode() + b"\n"
    lines = (",".join(map(_format, row)) for row in predictions.tolist())
    return "\n".join(lines).encode() + b"\n"
