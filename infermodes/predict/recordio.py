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

import itertools
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
_FLOATS = {"<f4": struct.Struct("<f"), "<f8": struct.Struct("<d")}  # an unpacked value's
_REPEATED = {1: "values", 2: "keys", 3: "shape"}  # a tensor's repeated fields


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
        padded = _padded(length)
        if start + padded > len(body):
            raise _bad(
                record,
                f"truncated: the frame says {length} bytes (padded to {padded}), "
                f"{len(body) - start} remain",
            )
        yield start, length
        offset = start + padded


def _padded(length: int) -> int:
    return (length + 3) // 4 * 4


def count_frames(body: bytes, most: int | None = None) -> tuple[int, bool]:
    """How many frames ``body`` holds, checked, without building their views (a view costs
    ~25 times an empty frame's 8 bytes, so a body is counted against the row limit first),
    and whether that is all of them: the count stops at ``most + 1``, which decides a
    refusal by itself (a 25 MiB body is ~3.3 M empty frames, ~2 s of CPU to walk), and the
    frames past it are not walked."""
    count, end = 0, 0
    for start, length in itertools.islice(_spans(body), None if most is None else most + 1):
        count, end = count + 1, start + _padded(length)
    return count, end == len(body)


def payloads(body: bytes) -> Iterator[memoryview]:
    """The payload of every frame, in order (views into ``body``), one at a time: a list of
    them would hold ~200 bytes a frame."""
    view = memoryview(body)
    for start, length in _spans(body):
        yield view[start : start + length]


def _varint(data: memoryview, pos: int, record: int) -> tuple[int, int]:
    if pos < len(data) and data[pos] < 0x80:  # one byte: every tag and length under 128
        return data[pos], pos + 1
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


def _fields(
    data: memoryview, record: int, what: str
) -> Iterator[tuple[int, int, int | memoryview]]:
    """A message's fields as (number, wire type, value): an int for varints and fixed-width
    fields (their raw bits), the bytes for length-delimited ones. One at a time: unpacked
    repeated fields are a field every 2 to 11 bytes, ~70 bytes each kept in a list."""
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
        yield number, wire, value


def _packed_varints(data: memoryview, record: int) -> Iterator[int]:
    pos = 0
    while pos < len(data):
        value, pos = _varint(data, pos, record)
        yield value


def _entries(
    wire: int, content: int | memoryview, dtype: str | None, record: int, what: str
) -> int:
    """How many values one field of a repeated scalar holds, checked, none read: one, or a
    packed run's (its varints counted by their last bytes)."""
    if not isinstance(content, memoryview):
        if wire != (_VARINT if dtype is None else _FIXED32 if dtype == "<f4" else _FIXED64):
            raise _bad(record, f"{what}: wire type {wire} does not hold these values")
        return 1
    if dtype is not None:
        width = np.dtype(dtype).itemsize
        if len(content) % width:
            raise _bad(record, f"{what}: {len(content)} bytes are not whole {dtype[1:]}s")
        return len(content) // width
    if len(content) and content[-1] >= 0x80:
        raise _bad(record, "truncated varint")
    return int(np.count_nonzero(np.frombuffer(content, dtype=np.uint8) < 0x80))


def _runs(message: memoryview, number: int, record: int, what: str) -> Iterator[int | memoryview]:
    """A repeated scalar field's fields, in order: a value, or a packed run's bytes."""
    for field_number, _, content in _fields(message, record, what):
        if field_number == number:
            yield content


def _varints(message: memoryview, number: int, record: int, what: str) -> Iterator[int]:
    """A repeated varint field's values (checked by ``_entries``), one at a time."""
    for content in _runs(message, number, record, what):
        if isinstance(content, memoryview):
            yield from _packed_varints(content, record)
        else:
            yield content


def _floats(
    message: memoryview, dtype: str, record: int, what: str
) -> Iterator[np.ndarray | float]:
    """A tensor's fixed-width values (checked by ``_entries``): a packed run as one view of
    the body, an unpacked value on its own."""
    unpacked = _FLOATS[dtype]
    for content in _runs(message, 1, record, what):
        if isinstance(content, memoryview):
            yield np.frombuffer(content, dtype=dtype)
        else:
            yield unpacked.unpack(content.to_bytes(unpacked.size, "little"))[0]


def _int32(raw: int, record: int, name: str) -> int:
    """An int32 varint's value: two's complement in 64 bits."""
    value = raw - (1 << 64) if raw >> 63 else raw
    if not -(2**31) <= value < 2**31:
        raise _bad(record, f"{name} values beyond the range of int32")
    return value


@dataclass(frozen=True)
class Tensor:
    """A record's ``"values"`` tensor: its fields counted and its shape read, its values not.
    The caller sizes and checks the row from the counts, then ``fill`` writes the values into
    it: no value becomes an object or an array of its own (unpacked fields cost ~74 bytes a
    byte so). Sparse when it has keys, or no values but a shape (a sparse row with nothing
    present)."""

    message: memoryview
    name: str
    dtype: str | None  # a fixed-width value's little-endian dtype; None: int32 varints
    values: int  # how many
    keys: int  # how many
    shape: tuple[int, ...]  # one dimension at most: a record is one row
    record: int
    # the values when they are one packed run of fixed-width ones (what the SDK writes): kept
    # from the count, so that ``fill`` reads them at once rather than walking the fields again
    run: memoryview | None = None

    @property
    def sparse(self) -> bool:
        return self.keys > 0 or (self.values == 0 and len(self.shape) > 0)

    def key_positions(self, width: int) -> np.ndarray:
        """The keys, each below ``width`` (else the error names it), as row positions."""
        positions = np.empty(self.keys, dtype=np.intp)
        what = f"{self.name} keys"
        for index, key in enumerate(_varints(self.message, 2, self.record, what)):
            if key >= width:
                raise _bad(
                    self.record,
                    f"feature index {key} is out of range; expected {width} features "
                    f"(indices 0..{width - 1})",
                )
            positions[index] = key
        return positions

    def fill(self, row: np.ndarray, positions: np.ndarray | None = None) -> None:
        """Write the values into ``row``: in order, or each at its key's position
        (``key_positions``, as many as the values); one packed run (``run``) in one view."""
        if self.run is not None and self.dtype is not None:
            values = np.frombuffer(self.run, dtype=self.dtype)
            row[slice(0, len(values)) if positions is None else positions] = values
            return
        what = f"{self.name} values"
        runs: Iterator[np.ndarray | float]
        if self.dtype is None:
            runs = (
                _int32(raw, self.record, self.name)
                for raw in _varints(self.message, 1, self.record, what)
            )
        else:
            runs = _floats(self.message, self.dtype, self.record, what)
        start = 0
        for run in runs:
            stop = start + (len(run) if isinstance(run, np.ndarray) else 1)
            row[slice(start, stop) if positions is None else positions[start:stop]] = run
            start = stop


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
    message = chosen[1]
    counts = {1: 0, 2: 0, 3: 0}  # values, keys, shape
    shape: list[int] = []
    run: memoryview | None = None  # the last values field's bytes, when packed fixed-width
    for number, wire, content in _fields(message, record, name):
        if number not in counts:
            continue
        what = f"{name} {_REPEATED[number]}"
        counts[number] += _entries(wire, content, dtype if number == 1 else None, record, what)
        if number == 1:
            run = content if isinstance(content, memoryview) and dtype is not None else None
        if number == 3:
            if counts[3] > 1:
                raise _bad(record, f"{name} shape has more than one dimension; a record is one row")
            shape.extend(
                _packed_varints(content, record) if isinstance(content, memoryview) else [content]
            )
    one_run = run is not None and len(run) == counts[1] * np.dtype(dtype).itemsize
    return Tensor(
        message, name, dtype, counts[1], counts[2], tuple(shape), record, run if one_run else None
    )


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
