"""Request and response codecs of the managed platform's XGBoost container contract.

Inputs (``text/csv``, ``application/json``, ``text/libsvm``, ``application/x-recordio-protobuf``)
decode to a float32 matrix with NaN for missing values; predictions encode to ``text/csv``,
``application/json`` or ``application/jsonlines``, as one score per row or as the container's
selected output keys (``outputs.OutputSelection``). Every decoding error names the row and
column (1-based; a libsvm value, its feature index), because a 400 that says only "bad input"
sends users hunting. The one-row CSV case is the hot path: no pandas, no csv module.

Numbers are read as the platform's container reads them (a C float parser), not as Python's
``float`` would: a decimal with an optional sign, point and exponent (``1``, ``-0.5``, ``.5``,
``1e-3``), spaces or tabs around it. An empty field, JSON ``null`` and ``nan`` (any case) are
missing values. Refused, with the row and column: Python-only syntax (``1_0``), hexadecimal,
infinities and anything beyond float32's range (XGBoost refuses infinite inputs), JSON's
non-standard ``NaN``/``Infinity``. Rows end with LF or CRLF; a CR anywhere else is an error.
A UTF-8 byte order mark before the first row (CSV or libsvm) is skipped (spreadsheets and
editors write one; JSON's reader skips it too).
``max_rows`` and ``max_values`` bound what one body may cost, whatever its size: libsvm rows
need no bytes for absent features, so a small body can describe a huge dense matrix.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from infermodes import media
from infermodes.errors import (
    InvalidInput,
    PayloadTooLarge,
)
from infermodes.predict import fastjson, recordio
from infermodes.predict.outputs import OutputSelection
from infermodes.settings import MAX_DECODED_VALUES

# the Content-Type and Accept headers' reading is media's, shared with the platform API
CSV, JSON, LIBSVM, JSONLINES = media.CSV, media.JSON, media.LIBSVM, media.JSONLINES
RECORDIO, INPUT_TYPES = media.RECORDIO, media.INPUT_TYPES
media_type, content_type_of = media.media_type, media.content_type_of
OUTPUT_TYPES, accept_of = media.OUTPUT_TYPES, media.accept_of

# The smallest magnitude that float32 rounds to infinity (2**128 - 2**103).
F32_OVERFLOW = 2.0**128 - 2.0**103
_DECIMAL = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAN = frozenset({b"nan", b"+nan", b"-nan"})
_OTHER_DELIMITERS = (b";", b"\t", b"|")  # a first row's numbers joined by one: named so
_INFINITY = frozenset({b"inf", b"+inf", b"-inf", b"infinity", b"+infinity", b"-infinity"})
# A field of these bytes only, with at most an exponent besides, is a plain decimal (or an
# error): Python's float() reads it as a C parser would. It can still overflow float32, but
# only with an exponent or 39 integer digits.
_PLAIN = b"0123456789+-., \t"
_LONG_DIGITS = re.compile(rb"\d{39}")
_LONE_CR = re.compile(rb"\r(?!\n)")
UTF8_BOM = b"\xef\xbb\xbf"
_INDEX_DIGITS = 9  # feature indices beyond 999,999,999 are out of range for any model we load
# Peak memory of decoding a JSON body, per body byte, the body included: the parsed document's
# float objects and row lists dominate. Rows of one one-digit feature (``[0],``) are the worst
# shape measured (~35); rows of 20 such features cost ~16, of 20 six-digit decimals ~5.
# The native path (``fastjson``) needs at most 2 besides the body, but any body it does not
# take (another shape, a malformed one) is parsed so: the async worker caps its JSON inputs by
# its memory with this worst case, and the model server such bodies (``predict.memory``).
JSON_BYTES_EXPANSION = 36


@dataclass(frozen=True)
class ReadCost:
    """The peak memory a Python reader takes for a body (tracemalloc's, the body included):
    ``per_row`` for each row (a bytes object per line, a list or dict per row) and
    ``per_byte`` for each byte of it (a float object per field), so a body of wide rows is not
    charged its narrowest shape's cost. Pinned by tests/unit/test_codecs.py."""

    per_row: int
    per_byte: int
    shortest_row: int  # bytes: the narrowest row's, for a cap that cannot count rows

    def estimate(self, rows: int, size: int, width: int = 0) -> int:
        """``width``: the model's features, when known, whose matrix is added. A sparse row
        (libsvm's, a RecordIO record's keys) names a wide row in a few bytes, and its matrix
        row costs ``width`` x 4 bytes whatever the body's: 2,000 frames of 36 bytes declaring
        1,000 features peaked at 112 bytes a byte, against ~6 from the bytes alone. A dense
        body's values are then counted twice (in the cost per byte too): at most ~17 % more
        than it takes (a long RecordIO record of float32s), ~3 % for CSV rows."""
        return rows * self.per_row + size * self.per_byte + matrix_bytes(rows, width)

    @property
    def worst_per_byte(self) -> int:
        """The cost per byte of a body of the shortest rows, for a cap on length alone."""
        return self.per_byte + -(-self.per_row // self.shortest_row)


def matrix_bytes(rows: int, width: int) -> int:
    """The float32 matrix the readers fill: what a sparse body's estimate cannot be below."""
    return rows * width * np.dtype(np.float32).itemsize


# Measured (narrow rows, wide rows, one long line): CSV's ``1\n`` rows ~168 a row, one line of
# ``1,1,...`` ~23 a byte, 8 six-digit columns ~9 a byte; libsvm's ``0:\n`` rows ~220 a row
# beyond the bytes, one line of ``i:1`` ~21 a byte, 8 features a row ~9; RecordIO, read a frame
# and a value at a time into the matrix (the body with the peak): empty frames ~8 a frame (1.02
# a byte), one-value frames ~32 (1.15 a byte), dense 8-value ~88 (1.6), 100-value ~830 (1.9),
# sparse ~2.1 a byte, unpacked fields 3.3 at most, one long record of one-byte int32 varints
# 5.04 (the worst: the matrix's 4 a value). Its 6 a byte covers every shape alone; 16 a frame,
# twice an empty frame's whole cost, is the margin for what reading a frame allocates. JSON
# parsed whole is charged its worst shape per byte (its rows are not counted before it is
# parsed).
PYTHON_READ_COST = {
    JSON: ReadCost(0, JSON_BYTES_EXPANSION, 1),
    CSV: ReadCost(144, 26, 2),  # "1\n"; fields after a space ~26 a byte
    LIBSVM: ReadCost(232, 23, 3),  # "0:\n"
    RECORDIO: ReadCost(16, 6, 8),  # an empty frame
}
# RecordIO values checked for infinities at once (_refuse_infinite): a mask of 64 KiB at most
INFINITY_CHECK_VALUES = 1 << 16
JSON_FILL_ROWS = 256  # rows decoded into the matrix at once (see decode_json)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value: bytes | str, limit: int = 40) -> str:
    """A piece of the input for an error message, cut short (inputs can be megabytes)."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return repr(_cut(text, limit))


def _unreadable(where: str, token: bytes, problem: str) -> InvalidInput:
    """``where problem``; but a token that is not UTF-8 (a Latin-1 or Windows-1252 export's
    accented letter, say) is an encoding problem, and named as one rather than as its
    replacement character."""
    try:
        token.decode("utf-8")
    except UnicodeDecodeError as exc:
        shown = _cut(token.decode("utf-8", "backslashreplace"), 40)  # its bytes as \xe9
        return InvalidInput(
            f"{where} '{shown}' is not UTF-8 (byte 0x{token[exc.start]:02x}): send the body as "
            "UTF-8"
        )
    return InvalidInput(f"{where} {problem}")


def _beyond_float32(
    token: bytes | float, row: int, column: int, unit: str = "column"
) -> InvalidInput:
    if isinstance(token, bytes):
        shown = _show(token)
    else:  # a JSON number, already read: too large for float64 too, or only for float32
        shown = "the number" if math.isinf(token) else repr(token)
    return InvalidInput(f"row {row}, {unit} {column}: {shown} is beyond the range of float32")


def _number(token: bytes, row: int, column: int, unit: str = "column") -> float:
    """One field, strictly: see the module's docstring for what is a number. Errors name
    the row and the ``unit`` (a CSV column; a libsvm value's feature index)."""
    token = token.strip(b" \t")
    if not token:
        return math.nan
    if _DECIMAL.fullmatch(token):
        value = float(token)
        if -F32_OVERFLOW < value < F32_OVERFLOW:
            return value
        raise _beyond_float32(token, row, column, unit)
    lowered = token.lower()
    if lowered in _NAN:
        return math.nan
    if lowered in _INFINITY:
        raise InvalidInput(
            f"row {row}, {unit} {column}: infinite values are refused (XGBoost does not "
            "take them); send an empty field or nan for a missing value"
        )
    raise _unreadable(
        f"row {row}, {unit} {column}:",
        token,
        f"cannot parse {_show(token)} as a number (expected a decimal such as -1.5 or 2e-3)",
    )


def _check_width(width: int, num_features: int | None, row: int) -> None:
    if num_features is not None and width != num_features:
        raise InvalidInput(f"row {row}: expected {num_features} features, got {width}")


def _at_least(number: int, whole: bool) -> str:
    """A count in a refusal: ``number``, or "at least" it when what was counted is only the
    first part of the body (the part that decided the refusal)."""
    return f"{number}" if whole else f"at least {number}"


def _check_size(
    rows: int,
    width: int | None,
    max_rows: int | None,
    max_values: int,
    *,
    all_rows: bool = True,
) -> None:
    """413 before decoding when the body has more rows (lines, for CSV and libsvm) or would
    make a larger matrix than one request may; ``all_rows`` False: ``rows`` are those of the
    body's first part only (RecordIO's frames counted up to a bound)."""
    if max_rows is not None and rows > max_rows:
        raise PayloadTooLarge(
            f"the body has {_at_least(rows, all_rows)} rows; one request may carry at most "
            f"{max_rows}"
        )
    if width is not None and rows * width > max_values:
        raise PayloadTooLarge(
            f"{_at_least(rows, all_rows)} rows of {width} features make "
            f"{_at_least(rows * width, all_rows)} values; one request may decode to at most "
            f"{max_values}"
        )


def _check_lines(
    text: bytes, num_features: int | None, max_rows: int | None, max_values: int
) -> None:
    """``_check_size`` of a line-based body (CSV, libsvm), counted by its lines."""
    _check_size(text.count(b"\n") + 1, num_features, max_rows, max_values)


def _lines(
    body: bytes, num_features: int | None, max_rows: int | None, max_values: int
) -> list[bytes]:
    """The body's lines, counted against the limits before they are split. Rows end with LF
    or CRLF; a CR anywhere else is refused, since readers disagree on it (Python's splitlines
    ends a row there, the platform's container does not)."""
    text = body.rstrip(b"\r\n")
    _check_lines(text, num_features, max_rows, max_values)
    if b"\r" in text:
        _check_no_lone_cr(text)
        text = text.replace(b"\r\n", b"\n")
    return text.split(b"\n")


def _check_no_lone_cr(text: bytes) -> None:
    """Refuse a CR that does not end a row (``_lines``), naming its row: the one message, also
    where only the first row is read early (``_rows_checked``)."""
    lone = _LONE_CR.search(text)
    if lone is not None:
        row = text.count(b"\n", 0, lone.start()) + 1
        raise InvalidInput(f"row {row}: a carriage return inside a row; end rows with LF")


def _csv_row(line: bytes, row: int, width: int | None) -> list[float]:
    """A row of plain decimals goes straight to float() (the hot path); anything else is read
    field by field, strictly, so that the error names the field."""
    fields = line.split(b",")
    _check_width(len(fields), width, row)
    rest = line.translate(None, _PLAIN)
    if not rest or not rest.translate(None, b"eE"):
        try:
            values = [float(field) if field.strip() else math.nan for field in fields]
        except ValueError:
            pass  # e.g. "1.2.3" or "1 2": the strict reader below names it
        else:
            if rest or _LONG_DIGITS.search(line):
                for column, value in enumerate(values, 1):
                    if abs(value) >= F32_OVERFLOW:
                        raise _beyond_float32(fields[column - 1].strip(), row, column)
            return values
    return [_number(field, row, column) for column, field in enumerate(fields, 1)]


def _is_number(token: bytes) -> bool:
    return bool(_DECIMAL.fullmatch(token)) or token.lower() in _NAN


def _other_delimiter(field: bytes) -> bytes | None:
    """The delimiter of a field that is mostly numbers joined by another delimiter than
    CSV's (``M;0.455;0.365``: an export with another locale's or tool's separator, an id or
    a categorical column among them; empty parts are missing values)."""
    for delimiter in _OTHER_DELIMITERS:
        parts = [part.strip(b" \t") for part in field.split(delimiter)]
        numbers = sum(map(_is_number, parts))
        others = sum(1 for part in parts if part and not _is_number(part))
        if numbers >= 2 and numbers > others:
            return delimiter
    return None


def _quoted_field(line: bytes, row: int) -> InvalidInput | None:
    """The error of a row that holds a field in double quotes, naming it; None without one.
    The model reads numbers, and CSV goes to it as it is: quotes are not parsed (nor by the
    platform's XGBoost container), so ``"1,5",0.3`` would be refused as a row of one feature
    too many, or as ``'"1'`` that is no number. On the error path only."""
    quote = line.find(b'"')
    if quote < 0:
        return None
    start = line.rfind(b",", 0, quote) + 1
    closing = line.find(b'"', quote + 1)
    field = line[start : closing + 1] if closing >= 0 else line[start:]
    return InvalidInput(
        f"row {row}, column {line.count(b',', 0, quote) + 1}: the quoted field {_show(field)} is "
        "not taken: the model reads numbers only, and quotes in CSV are not parsed (nor by the "
        "platform's XGBoost container); send each number unquoted, without a comma in it"
    )


def _first_row_hint(exc: InvalidInput, line: bytes, row: int = 1) -> InvalidInput:
    """The error of a body's first row, with what the row looks like when that explains it:
    numbers joined by another delimiter than ','; a header row, when no field of the row is a
    number (a categorical value left unencoded is not one); else a quoted field. On the error
    path only."""
    fields = line.split(b",")
    for field in fields:
        delimiter = _other_delimiter(field)
        if delimiter is not None:
            return InvalidInput(
                f"{exc}; the row looks separated by {delimiter.decode()!r}, and CSV fields are "
                "separated by ','"
            )
    if any(_is_number(field.strip(b" \t")) for field in fields):
        return _quoted_field(line, row) or exc
    return InvalidInput(
        f"{exc}; no field of this row is a number: header rows are not supported (nor by the "
        "platform's container); send rows only"
    )


def decode_csv(
    body: bytes,
    num_features: int | None = None,
    *,
    max_rows: int | None = None,
    max_values: int = MAX_DECODED_VALUES,
) -> np.ndarray:
    """CSV without a header (a first row without a number is named as one); empty fields are
    missing values, blank lines are skipped."""
    body = body.removeprefix(UTF8_BOM)
    line = body.rstrip(b"\r\n")
    if b"\n" not in line and b"\r" not in line:  # one row: the hot path
        if not line.strip(b" \t"):
            raise InvalidInput("empty request body: expected at least one CSV row")
        try:
            values = _csv_row(line, 1, num_features)
        except InvalidInput as exc:
            raise _first_row_hint(exc, line) from None
        if len(values) > max_values:
            _check_size(1, len(values), max_rows, max_values)
        return np.array(values, dtype=np.float32).reshape(1, -1)
    lines = _lines(body, num_features, max_rows, max_values)
    rows: list[list[float]] = []
    width = num_features
    try:
        for number, line in enumerate(lines, 1):
            if not line.strip(b" \t"):
                continue
            if width is None:
                width = line.count(b",") + 1
                _check_size(len(lines), width, max_rows, max_values)
            rows.append(_csv_row(line, number, width))
    except InvalidInput as exc:
        if rows:
            raise _quoted_field(line, number) or exc from None
        raise _first_row_hint(exc, line, number) from None
    if not rows:
        raise InvalidInput("empty request body: expected at least one CSV row")
    return np.array(rows, dtype=np.float32)


def _describe(value: object) -> str:
    """A JSON value for an error message, never rendered whole (it may be huge or deep)."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if type(value) is float:
        return "a number"
    return json.dumps(value[:40] if isinstance(value, str) else value)


def _json_row(row: object, index: int, width: int | None) -> list[float]:
    if isinstance(row, dict):
        if "features" not in row:
            raise InvalidInput(f"row {index}: an object row needs a 'features' list")
        row = row["features"]
    if not isinstance(row, list):
        raise InvalidInput(f"row {index}: expected a list of numbers, got {_describe(row)}")
    values = []
    for column, value in enumerate(row, 1):
        if value is None:
            values.append(math.nan)
        elif type(value) is float:  # integers are parsed as floats too; bool is not float
            if not -F32_OVERFLOW < value < F32_OVERFLOW:
                raise _beyond_float32(value, index, column)
            values.append(value)
        elif type(value) is int:  # a batch record's integer (parse_record), as a float
            try:
                number = float(value)
            except OverflowError:  # beyond float64: inf, as its text reads
                number = math.inf
            if not -F32_OVERFLOW < number < F32_OVERFLOW:
                raise _beyond_float32(number, index, column)
            values.append(number)
        else:
            raise InvalidInput(
                f"row {index}, column {column}: expected a number, got {_describe(value)}"
            )
    _check_width(len(values), width, index)
    return values


def _refuse_constant(name: str) -> float:
    raise InvalidInput(f"{name} is not JSON; send null for a missing value")


class NonJsonConstant(float):
    """``NaN`` or an infinity in a batch record (``parse_record``): kept where the model does
    not read it (a join writes it back as it was), refused in what it reads
    (``refuse_constants``)."""


def parse_record(raw: bytes) -> tuple[object, bool]:
    """A batch record's document, parsed once for its input filter, its rows and its join,
    as ``json.loads`` reads it (any UTF, integers kept), and whether it holds a ``NaN`` or an
    infinity (marked). ``ValueError`` for what is not JSON; one nested too deeply is one."""
    marked: list[NonJsonConstant] = []

    def constant(name: str) -> NonJsonConstant:
        marked.append(NonJsonConstant(name))
        return marked[-1]

    try:
        return json.loads(raw, parse_constant=constant), bool(marked)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def refuse_constants(selected: object) -> None:
    """The first ``NaN`` or infinity, in document order, of what the model reads: refused
    before any row is read, as ``decode_json``'s parse refuses it."""
    pending = [selected]
    while pending:
        value = pending.pop()
        if isinstance(value, NonJsonConstant):
            _refuse_constant(json.dumps(value))
        if isinstance(value, dict):
            pending.extend(reversed(value.values()))
        elif isinstance(value, list):
            pending.extend(reversed(value))


def decode_json(
    body: bytes,
    num_features: int | None = None,
    *,
    max_rows: int | None = None,
    max_values: int = MAX_DECODED_VALUES,
    memory_budget: int | None = None,
) -> np.ndarray:
    """``{"instances": [[...], ...]}``, ``{"instances": [{"features": [...]}]}``, a list of
    rows, one row, or ``{"features": [...]}``. Rows of numbers and nulls go to the native
    decoder (``fastjson``); what it does not take, ``json.loads`` reads or names the error of,
    within ``memory_budget`` bytes of memory (beyond: PayloadTooLarge, as it costs up to
    ``JSON_BYTES_EXPANSION`` bytes of memory per byte)."""
    if max_rows is not None:  # parsing holds the GIL and costs ~70 bytes per container
        containers = body.count(b"[") + body.count(b"{")
        if containers > 2 * max_rows + 2:  # a row is at most an object and its list
            raise PayloadTooLarge(
                f"the body has {containers} JSON arrays and objects; {max_rows} rows, the most "
                f"one request may carry, need at most {2 * max_rows + 2}"
            )
    encoding = json.detect_encoding(body)  # what json.loads would decode it as
    if not encoding.startswith("utf-8"):  # a UTF-8 BOM may be skipped (RFC 8259, 8.1)
        raise InvalidInput(
            f"JSON must be UTF-8 (RFC 8259); the body is {encoding.upper()}: send it as UTF-8"
        )
    native = fastjson.shape(body)  # the numeric shapes: at most 2 bytes of memory a body byte
    if native is not None:  # the limits in the order the rows below meet them
        rows_count, width = native
        _check_size(rows_count, num_features, max_rows, max_values)
        _check_width(width, num_features, 1)
        _check_size(rows_count, width, max_rows, max_values)
        return fastjson.fill(body, rows_count, width)
    if memory_budget is not None and len(body) * JSON_BYTES_EXPANSION > memory_budget:
        raise over_memory(
            JSON,
            len(body),
            0,
            memory_budget,
            "and not rows of numbers and nulls (the shapes read natively, at 2 bytes of memory "
            "per byte at most); other JSON is parsed whole",
            'send rows of numbers, e.g. {"instances": [[1.5, 2]]}, or a smaller body',
        )
    try:
        # Integers become floats as they are read: no 4,300-digit limit, no OverflowError later.
        # Decoded with the encoding found above, as json.loads would (it would look again).
        text = body.decode(encoding, "surrogatepass")
        document = json.loads(text, parse_int=float, parse_constant=_refuse_constant)
        del text  # a copy of the body: not kept while the matrix is filled
    except RecursionError:
        raise InvalidInput("malformed JSON: nested too deeply") from None
    except UnicodeDecodeError as exc:  # a Latin-1 'é', say: the JSON may be fine, not its bytes
        raise InvalidInput(
            f"JSON must be UTF-8 (RFC 8259): byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start} is not ({exc.reason}); send the body as UTF-8"
        ) from None
    except ValueError as exc:
        raise InvalidInput(f"malformed JSON: {str(exc)[:200]}") from None
    return json_rows(document, num_features, max_rows=max_rows, max_values=max_values)


def over_memory(
    content_type: str,
    size: int,
    rows: int,
    budget: int,
    why: str,
    advice: str,
    *,
    record: str = "body",
    read_so_far: bool = False,
    shared: str = "the memory limit, shared by the concurrent reads",
    width: int = 0,
    all_rows: bool = True,
) -> PayloadTooLarge:
    """The 413 of a ``record`` (a body; a batch's line or object) of ``size`` bytes (at least,
    when it was ``read_so_far`` only) in ``rows`` rows (at least, unless ``all_rows``) whose
    Python reader's estimated memory (``PYTHON_READ_COST``, with the matrix of ``width``
    features) is over ``budget``, what one read may take within the ``shared`` memory
    (``predict.memory``): ``why`` that reader reads it."""
    cost = PYTHON_READ_COST[content_type]
    counted = _at_least(rows, all_rows)
    shape = f"{counted} rows x {cost.per_row} + " if cost.per_row else ""
    shape += f"{size} bytes x {cost.per_byte}"
    if width:
        shape += f" + a matrix of {counted} rows x {width} features x 4"
    estimate = _at_least(cost.estimate(rows, size, width), all_rows)
    return PayloadTooLarge(
        f"the {content_type} {record} is {_at_least(size, not read_so_far)} bytes {why}, at an "
        f"estimated {estimate} bytes of memory ({shape}); "
        f"one read may take up to {budget} bytes of memory here ({shared}): {advice}"
    )


def json_row_list(document: object) -> list[object]:
    """The rows of a parsed document of ``decode_json``'s shapes, as its errors number them
    (``row 1``...): a single row (``{"features": [...]}``, a list of numbers) is a list of
    one."""
    if isinstance(document, dict):
        if "instances" in document:
            rows = document["instances"]
        elif "features" in document:
            rows = [document]
        else:
            raise InvalidInput("JSON object needs an 'instances' list (or 'features')")
        if not isinstance(rows, list):
            raise InvalidInput("'instances' must be a list of rows")
        return rows
    if isinstance(document, list):
        is_one_row = bool(document) and not isinstance(document[0], list | dict)
        return [document] if is_one_row else document
    raise InvalidInput("JSON body must be an object with 'instances' or a list of rows")


def json_rows(
    document: object,
    num_features: int | None = None,
    *,
    max_rows: int | None = None,
    max_values: int = MAX_DECODED_VALUES,
    release: bool = True,
) -> np.ndarray:
    """The matrix of a parsed document of ``decode_json``'s shapes; ``release``: each block
    of its rows is let go once copied (the document is not used after)."""
    rows = json_row_list(document)
    if not rows:
        raise InvalidInput("no rows in the JSON body")
    _check_size(len(rows), num_features, max_rows, max_values)
    first = _json_row(rows[0], 1, num_features)
    width = len(first)
    if num_features is None:  # the first row gave the width: the rest is bounded now
        _check_size(len(rows), width, max_rows, max_values)
    # The parsed document is the peak (~30 bytes a value): fill the matrix a block of rows at a
    # time (one conversion each, as fast as the whole list's) and let each block's parsed rows
    # go once copied, rather than hold a second list of lists beside the document.
    matrix = np.empty((len(rows), width), dtype=np.float32)
    matrix[0] = first
    for start in range(1, len(rows), JSON_FILL_ROWS):
        stop = min(start + JSON_FILL_ROWS, len(rows))
        matrix[start:stop] = [_json_row(rows[i], i + 1, width) for i in range(start, stop)]
        if release:
            rows[start:stop] = itertools.repeat(None, stop - start)
    return matrix


def decode_libsvm(
    body: bytes,
    num_features: int | None = None,
    *,
    max_rows: int | None = None,
    max_values: int = MAX_DECODED_VALUES,
) -> np.ndarray:
    """``[label] index:value ...`` per line with zero-based feature indices, as XGBoost reads
    libsvm; a leading token without ``:`` is a label (it must be a number) and is ignored;
    absent features are missing, and a feature may appear once per row."""
    lines = _lines(body.removeprefix(UTF8_BOM), num_features, max_rows, max_values)
    parsed: list[dict[int, float]] = []
    highest = -1
    for number, line in enumerate(lines, 1):
        tokens = line.split()
        if not tokens:
            continue
        if b":" not in tokens[0]:
            if not _DECIMAL.fullmatch(tokens[0]):
                raise _unreadable(
                    f"row {number}: the label",
                    tokens[0],
                    f"{_show(tokens[0])} is not a number; libsvm rows are [label] index:value ...",
                )
            tokens = tokens[1:]
        row: dict[int, float] = {}
        for column, token in enumerate(tokens, 1):
            feature, sep, text = token.partition(b":")
            if not sep or not feature.isdigit():
                raise _unreadable(
                    f"row {number}, column {column}:",
                    token,
                    f"expected index:value, got {_show(token)}",
                )
            position = int(feature) if len(feature) <= _INDEX_DIGITS else -1
            if position < 0 or (num_features is not None and position >= num_features):
                expected = (
                    f"; expected {num_features} features (indices 0..{num_features - 1})"
                    if num_features is not None
                    else ""
                )
                raise InvalidInput(
                    f"row {number}, column {column}: feature index {_cut(feature.decode(), 20)} "
                    f"is out of range{expected}"
                )
            if position in row:
                raise InvalidInput(
                    f"row {number}, column {column}: feature index {position} appears twice"
                )
            row[position] = _number(text, number, position, "feature index")
            highest = max(highest, position)
        parsed.append(row)
    if not parsed:
        raise InvalidInput("empty request body: expected at least one libsvm row")
    width = num_features if num_features is not None else highest + 1
    _check_size(len(parsed), width, max_rows, max_values)
    matrix = np.full((len(parsed), width), np.nan, dtype=np.float32)
    for row_index, row in enumerate(parsed):
        for position, value in row.items():
            matrix[row_index, position] = value
    return matrix


def decode_recordio(
    body: bytes,
    num_features: int | None = None,
    *,
    max_rows: int | None = None,
    max_values: int = MAX_DECODED_VALUES,
    frames: int | None = None,
) -> np.ndarray:
    """A row per ``Record``: its ``"values"`` tensor, dense, or sparse with zero-based ``keys``
    (absent features are missing; a key at most once). Frames are counted against the limits
    before their views are built or any record is parsed (``frames``: their count, when the
    caller has counted them), and a record's values before any is read. Errors name the
    record (1-based) as others name the row."""
    if frames is None:
        count, _ = _recordio_rows(body, num_features, max_rows, max_values)
    else:
        count = frames
    if not count:
        raise InvalidInput("empty request body: expected at least one RecordIO record")
    payloads = recordio.payloads(body)
    first = recordio.features(next(payloads), 1)
    width = num_features if num_features is not None else _record_width(first, 1)
    _check_size(count, width, max_rows, max_values)
    matrix = np.full((count, width), np.nan, dtype=np.float32)
    block = max(1, INFINITY_CHECK_VALUES // max(width, 1))  # rows
    with np.errstate(over="ignore"):  # beyond float32 becomes infinity, refused a block at once
        _place_record(matrix[0], first, 1)
        for number, payload in enumerate(payloads, 2):
            _place_record(matrix[number - 1], recordio.features(payload, number), number)
            if number % block == 0:
                _refuse_infinite(matrix, number - block, number)
    _refuse_infinite(matrix, count - count % block, count)
    return matrix


def _refuse_infinite(matrix: np.ndarray, start: int, stop: int) -> None:
    """Rows ``start``..``stop`` of a RecordIO matrix hold no infinity (a value beyond float32
    reads as one): checked a block of rows at once, not a row at a time (a call per record
    cost ~10 % of a dense record's read) nor the whole matrix (a mask of a quarter of its
    size, which the read's memory estimate does not hold)."""
    infinite = np.isinf(matrix[start:stop])
    if infinite.any():
        row, column = (int(i) for i in np.argwhere(infinite)[0])
        raise InvalidInput(
            f"record {start + row + 1}, feature index {column}: a value is infinite or beyond "
            "the range of float32 (XGBoost refuses infinite inputs)"
        )


def _record_width(tensor: recordio.Tensor, number: int) -> int:
    if not tensor.sparse:
        return tensor.values
    if len(tensor.shape) != 1:
        raise InvalidInput(f"record {number}: a sparse record needs a one-dimensional shape")
    return tensor.shape[0]


def _place_record(row: np.ndarray, tensor: recordio.Tensor, number: int) -> None:
    """Write one record's values into its (all-missing) row of the matrix, its counts checked
    first (a value beyond float32 is refused with its block, ``_refuse_infinite``)."""
    width = len(row)
    expected = width if tensor.sparse else tensor.values
    if tensor.shape and tensor.shape != (expected,):
        raise InvalidInput(
            f"record {number}: shape {list(tensor.shape)} does not match {expected} features"
        )
    positions = None
    if not tensor.sparse:
        _check_width(tensor.values, width, number)
    else:
        if tensor.keys != tensor.values:
            raise InvalidInput(f"record {number}: {tensor.keys} keys for {tensor.values} values")
        positions = tensor.key_positions(width)
        if len(np.unique(positions)) != len(positions):  # O(keys), not O(the model's width)
            raise InvalidInput(f"record {number}: a feature index appears twice")
    tensor.fill(row, positions)


# Why a body of each type reaches its Python reader, and how to send one that costs less.
_PYTHON_READ = {
    CSV: (
        "and not read natively (a byte order mark, an error, a row's field count unlike the "
        "model's); it is read in Python",
        "send it without a byte order mark, or a smaller body",
    ),
    LIBSVM: ("and libsvm is read in Python", "send it as text/csv, or a smaller body"),
    RECORDIO: ("and RecordIO is read in Python", "send it as text/csv, or a smaller body"),
}
_DECODERS = {CSV: decode_csv, JSON: decode_json, LIBSVM: decode_libsvm, RECORDIO: decode_recordio}
GZIP_MAGIC = b"\x1f\x8b"  # no input starts so: 0x8b is a UTF-8 continuation byte, not RecordIO's


def _recordio_rows(
    body: bytes,
    width: int | None,
    max_rows: int | None,
    max_values: int,
    budget: int | None = None,
) -> tuple[int, bool]:
    """A RecordIO body's frames (counted without reading them) held to the limits, and whether
    the count is all of them: it stops one frame past the first bound that decides a refusal
    (a 25 MiB body of empty frames is ~3.3 M frames, ~2 s of CPU to walk), the row limit, the
    values' (``width`` known) or, with no row limit (the async worker's), the ``budget``'s:
    the estimate grows a frame at a time. The row limit's refusal comes before the memory's,
    as for every type (it says what to send; the memory's would blame the reader)."""
    limits = (max_rows, max_values // width if width else None)
    bounds = [bound for bound in limits if bound is not None]
    if budget is not None and max_rows is None:
        cost = PYTHON_READ_COST[RECORDIO]
        spare = budget - cost.estimate(0, len(body))
        bounds.append(max(spare // cost.estimate(1, 0, width or 0), 0))
    rows, whole = recordio.count_frames(body, min(bounds, default=None))
    _check_size(rows, width, max_rows, max_values, all_rows=whole)
    return rows, whole


def _rows_checked(
    body: bytes,
    content_type: str,
    num_features: int | None,
    max_rows: int | None,
    max_values: int,
    budget: int,
) -> tuple[int, bool]:
    """The body's rows (lines; RecordIO's frames, as far as ``_recordio_rows`` counts them)
    held to the limits, and whether they are all of them; and a CSV first row's field count
    held to the model's: the errors that come before a memory refusal."""
    if content_type == RECORDIO:
        return _recordio_rows(body, num_features, max_rows, max_values, budget)
    start = len(UTF8_BOM) if body.startswith(UTF8_BOM) else 0
    end = len(body)
    while end > start and body[end - 1] in b"\r\n":  # counted in place: no copy of the body
        end -= 1
    rows = body.count(b"\n", start, end) + 1
    _check_size(rows, num_features, max_rows, max_values)
    if content_type == CSV:
        first_end = body.find(b"\n", start, end) if rows > 1 else end
        # with its LF, so that a CRLF ending is not taken for a lone CR
        _check_no_lone_cr(body[start : first_end + 1 if rows > 1 else end])
        first = body[start:first_end]
        if first.strip(b" \t\r"):
            try:
                _check_width(first.count(b",") + 1, num_features, 1)
            except InvalidInput as exc:
                raise _first_row_hint(exc, first) from None
    return rows, True


def decode(
    body: bytes,
    content_type: str,
    num_features: int | None = None,
    *,
    max_rows: int | None = None,
    max_values: int = MAX_DECODED_VALUES,
    memory_budgets: Mapping[str, int] | None = None,
) -> np.ndarray:
    """Decode a body of a known input type (see ``content_type_of``): a matrix, or
    InvalidInput (400) / PayloadTooLarge (413) naming the problem. ``memory_budgets``: the
    memory each type's Python reader may take in this process, against its estimate from the
    body's rows and bytes (``PYTHON_READ_COST``); JSON's holds past the native decoder
    (``decode_json``), the others' for every body that reaches here, which the callers' native
    CSV reader did not take. The limits' 413 and a CSV row's field count come first: they say
    what to send."""
    if body.startswith(GZIP_MAGIC):  # otherwise named by the first byte a decoder trips on
        raise InvalidInput(
            "the body is gzip-compressed (it starts with 1f 8b): send it uncompressed; a "
            "Content-Encoding is not read"
        )
    budget = None if memory_budgets is None else memory_budgets.get(content_type)
    if content_type == JSON:
        return decode_json(
            body,
            num_features,
            max_rows=max_rows,
            max_values=max_values,
            memory_budget=budget,
        )
    rows = None
    if budget is not None:
        rows, all_rows = _rows_checked(
            body, content_type, num_features, max_rows, max_values, budget
        )
        width = num_features or 0
        if PYTHON_READ_COST[content_type].estimate(rows, len(body), width) > budget:
            raise over_memory(
                content_type,
                len(body),
                rows,
                budget,
                *_PYTHON_READ[content_type],
                width=width,
                all_rows=all_rows,
            )
    if content_type == RECORDIO:  # its frames counted once
        return decode_recordio(
            body, num_features, max_rows=max_rows, max_values=max_values, frames=rows
        )
    return _DECODERS[content_type](body, num_features, max_rows=max_rows, max_values=max_values)


def _format(value: float) -> str:
    return repr(float(value))


def _csv_field(value: object) -> str:
    """A selected output in a CSV row as the container writes it: a list quoted whole."""
    return f'"{value}"' if isinstance(value, list) else str(value)


def encode(predictions: np.ndarray, accept: str, outputs: OutputSelection | None = None) -> bytes:
    """One prediction per input row, in order: ``{"score": ...}`` entries (a list for
    multi-output rows) or, with ``outputs``, the selected keys. JSON wraps the entries in
    ``{"predictions": [...]}``, jsonlines writes one per line; CSV writes a row per prediction
    (its values, or the selected keys' values in their order)."""
    entries: Sequence[dict[str, object]]
    if outputs is None:
        if accept == CSV:  # the hot path
            if predictions.ndim == 1:
                return "\n".join(map(_format, predictions.tolist())).encode() + b"\n"
            lines = (",".join(map(_format, row)) for row in predictions.tolist())
            return "\n".join(lines).encode() + b"\n"
        entries = [{"score": score} for score in predictions.tolist()]
    else:
        entries = outputs.rows(predictions)
        if accept == CSV:
            lines = (",".join(_csv_field(row[key]) for key in outputs.keys) for row in entries)
            return "\n".join(lines).encode() + b"\n"
    if accept == JSON:
        return json.dumps({"predictions": entries}).encode()
    return b"".join(json.dumps(entry).encode() + b"\n" for entry in entries)
