"""A tiny writer of the platform's RecordIO-protobuf, for tests: what the SDK's
``write_numpy_to_dense_tensor`` and ``write_spmatrix_to_sparse_tensor`` write (a ``Record`` per
row, its feature ``"values"`` a packed tensor; sparse rows add ``keys`` and ``shape``).

Cross-checked once against the real ``protobuf`` package: a throw-away venv under /tmp with
``protobuf`` installed compiled the platform's ``record.proto`` and serialized the same rows,
dense (float32, float64, int32, with a label) and sparse; its bytes equalled this writer's
(``tests/unit/test_recordio.py`` keeps those bytes as literals).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from infermodes.predict.codecs import PYTHON_READ_COST, RECORDIO

MAGIC = 0xCED7230A
_TENSOR_FIELDS = {"float32": (2, "<f4"), "float64": (3, "<f8"), "int32": (7, None)}


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32s are ten bytes of two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def tensor(
    values: Sequence[float] | np.ndarray,
    keys: Sequence[int] | None = None,
    shape: Sequence[int] | None = None,
    kind: str = "float32",
    packed: bool = True,
) -> bytes:
    """A ``Value`` holding one tensor, its repeated fields packed, or not: each value a field
    of its own (proto2's encoding, which protobuf readers accept too)."""
    number, dtype = _TENSOR_FIELDS[kind]
    if dtype is None:
        entries = [varint(int(v)) for v in values]
    else:
        raw = np.asarray(values, dtype=dtype).tobytes()
        size = np.dtype(dtype).itemsize
        entries = [raw[start : start + size] for start in range(0, len(raw), size)]
    wire = 0 if dtype is None else 5 if dtype == "<f4" else 1
    body = _repeated(1, wire, entries, packed)
    body += _repeated(2, 0, [varint(k) for k in keys or ()], packed)
    body += _repeated(3, 0, [varint(s) for s in shape or ()], packed)
    return field(number, body)


def _repeated(number: int, wire: int, entries: list[bytes], packed: bool) -> bytes:
    if packed:
        return field(number, b"".join(entries)) if entries else b""
    tag = varint(number << 3 | wire)
    return b"".join(tag + entry for entry in entries)


def record(value: bytes, label: bytes | None = None) -> bytes:
    """A ``Record`` whose feature ``"values"`` is ``value`` (and label ``"values"`` ``label``)."""
    out = field(1, field(1, b"values") + field(2, value))
    if label is not None:
        out += field(2, field(1, b"values") + field(2, label))
    return out


def frame(payload: bytes, flags: int = 0, magic: int = MAGIC) -> bytes:
    padding = b"\0" * (-len(payload) % 4)
    return struct.pack("<II", magic, flags << 29 | len(payload)) + payload + padding


def dense(matrix: np.ndarray, kind: str = "float32") -> bytes:
    return b"".join(frame(record(tensor(row, kind=kind))) for row in matrix)


def sparse(matrix: np.ndarray) -> bytes:
    """NaN entries left out, as a scipy CSR matrix of the present values would be written."""
    width = matrix.shape[1]
    out = b""
    for row in matrix:
        present = [int(i) for i in np.flatnonzero(~np.isnan(row))]
        out += frame(record(tensor(row[present], keys=present, shape=[width])))
    return out


def frames_over(budget: int, size: int, width: int) -> int:
    """The fewest frames, one at least (a body's bytes alone may be over), whose estimate
    (``PYTHON_READ_COST``, with the matrix of ``width`` features) in a body of ``size`` bytes
    is over ``budget``: where a count held to the budget stops, and what its refusal names
    ("at least" so many)."""
    cost = PYTHON_READ_COST[RECORDIO]
    return next(rows for rows in range(1, budget + 2) if cost.estimate(rows, size, width) > budget)
