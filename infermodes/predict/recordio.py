"""``application/x-recordio-protobuf``: the managed platform's RecordIO framing around protobuf
``Record`` messages, read strictly and without a protobuf library.

A frame is the magic number ``0xced7230a`` and a length (both little-endian uint32; the top
three bits of the length are flags, which must be 0: a whole record), then the payload padded
to a multiple of 4 bytes (the padding's bytes are not read). The payload is the platform's
``Record`` (``features = 1``: map<string, Value>; ``label = 2``; ``uid``, ``metadata``,
``configuration`` = 3..5), whose feature ``"values"`` holds the row as a ``Value`` (oneof
``Float32Tensor = 2``, ``Float64Tensor = 3``, ``Int32Tensor = 7``, ``Bytes = 9``); a tensor has
``values = 1``, ``keys = 2`` (sparse indices) and ``shape = 3``, packed or not. Anything
malformed is InvalidInput naming the record (1-based): every loop here advances through the
body, so work is bounded by its size.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from infermodes.errors import InvalidInput

MAGIC = 0xCED7230A
_HEADER = struct.Struct("<II")
_LENGTH_BITS = 29
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {3: "start group", 4: "end group", 6: "reserved (6)", 7: "reserved (7)"}
# Value's oneof: field number -> (name, little-endian dtype of a packed value; None: varints)
_TENSORS: dict[int, tuple[str, str | None]] = {
    2: ("Float32Tensor", "<f4"),
    3: ("Float64Tensor", "<f8"),
    7: ("Int32Tensor", None),
}
_BYTES_VALUE = 9


@dataclass(frozen=True)
class Tensor:
    """A record's ``"values"`` feature: dense when ``keys`` is None."""

    values: np.ndarray
    keys: np.ndarray | None
    shape: tuple[int, ...]


def _bad(record: int, problem: str) -> InvalidInput:
    return InvalidInput(f"record {record}: {problem}")


def _spans(body: bytes) -> Iterator[tuple[int, int]]:
    """Each frame's payload as (start, length) in ``body``, checked, in order."""
    offset, record = 0, 0
    while offset < len(body):
        record += 1
        if len(body) - offset < _HEADER.size:
            raise _bad(record, f"{len(body) - offset} byte(s) at the end are not a frame header")
        magic, word = _HEADER.unpack_from(body, offset)
        if magic != MAGIC:
            raise _bad(
                record, f"bad magic number 0x{magic:08x} at byte {offset} (expected 0x{MAGIC:08x})"
            )
        flags, length = word >> _LENGTH_BITS, word & ((1 << _LENGTH_BITS) - 1)
        if flags:
            raise _bad(record, f"flags {flags} mark a multi-part record, which is not supported")
        start = offset + _HEADER.size
        padded = (length + 3) // 4 * 4
        if start + padded > len(body):
            raise _bad(
                record,
                f"truncated: the frame says {length} bytes (padded to {padded}), "
                f"{len(body) - start} remain",
            )
        yield start, length
        offset = start + padded


def count_frames(body: bytes) -> int:
    """How many frames ``body`` holds, checked, without building their views: a view costs
    ~25 times an empty frame's 8 bytes, so a body is counted against the row limit first."""
    return sum(1 for _ in _spans(body))


def frames(body: bytes) -> list[memoryview]:
    """The payload of every frame, in order (views into ``body``)."""
    view = memoryview(body)
    return [view[start : start + length] for start, length in _spans(body)]


def _varint(data: memoryview, pos: int, record: int) -> tuple[int, int]:
    result = 0
    for index in range(pos, min(pos + 10, len(data))):
        byte = data[index]
        result |= (byte & 0x7F) << (7 * (index - pos))
        if byte < 0x80:
            if result >> 64:
                raise _bad(record, "a varint beyond 64 bits")
            return result, index + 1
    if pos + 10 <= len(data):
        raise _bad(record, "a varint longer than 10 bytes")
    raise _bad(record, "truncated varint")


def _fields(data: memoryview, record: int, what: str) -> list[tuple[int, int, int | memoryview]]:
    """A message's fields as (number, wire type, value): an int for varints and fixed-width
    fields (their raw bits), the bytes for length-delimited ones."""
    fields: list[tuple[int, int, int | memoryview]] = []
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos, record)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _bad(record, f"field number 0 in {what}")
        value: int | memoryview
        if wire == _VARINT:
            value, pos = _varint(data, pos, record)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > len(data):
                raise _bad(record, f"truncated {size}-byte field {number} in {what}")
            value = int.from_bytes(data[pos : pos + size], "little")
            pos += size
        elif wire == _LEN:
            size, pos = _varint(data, pos, record)
            if pos + size > len(data):
                raise _bad(
                    record,
                    f"truncated field {number} in {what}: {size} bytes said, "
                    f"{len(data) - pos} remain",
                )
            value = data[pos : pos + size]
            pos += size
        else:
            raise _bad(
                record, f"unsupported wire type {_WIRE_NAMES[wire]} of field {number} in {what}"
            )
        fields.append((number, wire, value))
    return fields


def _packed_varints(data: memoryview, record: int) -> list[int]:
    values: list[int] = []
    pos = 0
    while pos < len(data):
        value, pos = _varint(data, pos, record)
        values.append(value)
    return values


def _repeated(
    fields: list[tuple[int, int, int | memoryview]],
    number: int,
    dtype: str | None,
    record: int,
    what: str,
) -> np.ndarray:
    """A repeated scalar field, packed (one or more length-delimited runs) or not."""
    runs: list[np.ndarray] = []
    for field_number, wire, value in fields:
        if field_number != number:
            continue
        expected = _VARINT if dtype is None else _FIXED32 if dtype == "<f4" else _FIXED64
        if isinstance(value, memoryview):
            if dtype is None:
                runs.append(np.array(_packed_varints(value, record), dtype=np.uint64))
            else:
                width = np.dtype(dtype).itemsize
                if len(value) % width:
                    raise _bad(record, f"{what}: {len(value)} bytes are not whole {dtype[1:]}s")
                runs.append(np.frombuffer(value, dtype=dtype))
        elif wire == expected:
            bits = np.array([value], dtype=np.uint64)
            runs.append(bits if dtype is None else bits.astype(f"<u{dtype[2]}").view(dtype))
        else:
            raise _bad(record, f"{what}: wire type {wire} does not hold these values")
    return np.concatenate(runs) if runs else np.empty(0, dtype=dtype or np.uint64)


def _tensor(value: memoryview, record: int) -> Tensor:
    chosen: tuple[int, memoryview] | None = None
    for number, _, content in _fields(value, record, "the 'values' feature"):
        if number == _BYTES_VALUE:
            raise _bad(record, "the 'values' feature holds Bytes; send a numeric tensor")
        if number not in _TENSORS:
            continue  # a Value type we do not know: protobuf readers skip unknown fields
        if chosen is not None:
            raise _bad(record, "the 'values' feature holds more than one tensor")
        if not isinstance(content, memoryview):
            raise _bad(record, f"field {number} of the 'values' feature is not a message")
        chosen = (number, content)
    if chosen is None:
        raise _bad(record, "the 'values' feature holds no Float32, Float64 or Int32 tensor")
    name, dtype = _TENSORS[chosen[0]]
    fields = _fields(chosen[1], record, name)
    raw = _repeated(fields, 1, dtype, record, f"{name} values")
    if dtype is None:  # int32 varints carry two's complement in 64 bits
        values = np.asarray(raw, dtype=np.uint64).astype(np.int64).astype(np.float64)
        if np.any((values < -(2**31)) | (values >= 2**31)):
            raise _bad(record, f"{name} values beyond the range of int32")
    else:
        values = np.asarray(raw, dtype=np.float64)
    keys = np.asarray(_repeated(fields, 2, None, record, f"{name} keys"), dtype=np.uint64)
    shape = np.asarray(_repeated(fields, 3, None, record, f"{name} shape"), dtype=np.uint64)
    # sparse when it has keys, or no values but a shape (a sparse row with nothing present)
    sparse = len(keys) > 0 or (len(values) == 0 and len(shape) > 0)
    return Tensor(values, keys if sparse else None, tuple(int(size) for size in shape))


def features(payload: memoryview, record: int) -> Tensor:
    """The ``"values"`` feature of one ``Record``; the label and the other fields are ignored."""
    found: Tensor | None = None
    for number, _, entry in _fields(payload, record, "the Record"):
        if number != 1:
            continue
        if not isinstance(entry, memoryview):
            raise _bad(record, "a features entry is not a message")
        key: bytes = b""
        value: memoryview | None = None
        for entry_number, _, content in _fields(entry, record, "a features entry"):
            if not isinstance(content, memoryview):
                continue
            if entry_number == 1:
                key = bytes(content)
            elif entry_number == 2:
                value = content
        if key != b"values":
            continue
        if found is not None:
            raise _bad(record, "the feature 'values' appears twice")
        found = _tensor(value if value is not None else memoryview(b""), record)
    if found is None:
        raise _bad(record, "no feature named 'values'")
    return found
