"""Predict over a stream: inputs up to 1 GB are read, decoded, predicted and written a chunk
of whole lines at a time, so memory stays bounded by the chunk size, not the input size.

CSV and libsvm are line-oriented and stream; JSON is one document and RecordIO-protobuf is
binary, so both are read whole under a size cap. jsonlines output is written a line per row as
each chunk is scored; JSON output is spliced into one document. Decoding goes through the
shared codecs (fast paths for clean CSV chunks, ``fastcsv``'s native parser, then numpy's C
parser, fall back to them for the exact error message), and a deadline is checked between
chunks, which is how the per-request invocation timeout is enforced without killing threads.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator, Mapping
from typing import IO, Protocol

import numpy as np

from infermodes.errors import InvalidInput, InvocationTimeout, PayloadTooLarge
from infermodes.predict import codecs, fastcsv
from infermodes.predict.model import XGBoostModel

WHOLE_TYPES = (codecs.JSON, codecs.RECORDIO)  # decoded whole; the others a chunk at a time
STREAMED_TYPES = tuple(kind for kind in codecs.INPUT_TYPES if kind not in WHOLE_TYPES)
LINE_LIMIT_CHUNKS = 16  # a "line" longer than this many chunks is refused, not buffered
_ROW_PREFIX = re.compile(r"^row (\d+)")


def iter_line_chunks(
    source: IO[bytes], chunk_bytes: int, max_chunk_bytes: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(number of the chunk's first line, chunk)`` with every chunk made of whole lines
    (the last may lack its newline), none longer than ``max_chunk_bytes`` (unset:
    ``LINE_LIMIT_CHUNKS`` chunks): a chunk is decoded at many bytes of memory per byte, so a
    line that does not fit is refused, not buffered."""
    limit = LINE_LIMIT_CHUNKS * chunk_bytes if max_chunk_bytes is None else max_chunk_bytes
    carry = b""
    first_line = 1
    while True:
        room = min(chunk_bytes, limit - len(carry))
        if room <= 0 and source.read(1):  # a last line of exactly ``limit`` bytes is taken
            raise PayloadTooLarge(
                f"line {first_line} is longer than {limit} bytes, the most of a CSV or libsvm "
                f"input decoded at once here (chunk_bytes x {LINE_LIMIT_CHUNKS}, less if the "
                "worker's memory cannot hold that per concurrent invocation); split it into "
                "shorter lines, or give the worker more memory"
            )
        block = source.read(room) if room > 0 else b""
        if not block:
            break
        data = carry + block
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            carry = data
            continue
        chunk, carry = data[:cut], data[cut:]
        if chunk.strip():
            yield first_line, chunk
        first_line += chunk.count(b"\n")
    if carry.strip():
        yield first_line, carry


def shift_rows(message: str, offset: int) -> str:
    """Codecs number rows from 1 within what they were given; make that a row of the input."""
    return _ROW_PREFIX.sub(lambda m: f"row {int(m.group(1)) + offset}", message, count=1)


_CLEAN_CSV = b"0123456789+-.eE, \t\r\nnaNA"


def _clean_csv(chunk: bytes, num_features: int) -> np.ndarray | None:
    """numpy's C parser for the common case; None (use the codecs) on anything unusual,
    including what numpy reads more leniently than the codecs (infinities, other whitespace,
    a lone CR), so that every mode accepts and refuses the same input."""
    if chunk.translate(None, _CLEAN_CSV) or chunk.count(b"\r") != chunk.count(b"\r\n"):
        return None
    try:
        rows = np.loadtxt(
            io.BytesIO(chunk), delimiter=",", dtype=np.float32, ndmin=2, comments=None
        )
    except ValueError:
        return None
    if rows.shape[1] != num_features or rows.shape[0] == 0 or np.isinf(rows).any():
        return None
    return rows


def decode_chunk(
    chunk: bytes,
    content_type: str,
    num_features: int,
    first_line: int,
    memory_budgets: Mapping[str, int] | None = None,
) -> np.ndarray:
    """``codecs.decode``'s matrix of a chunk whose first line is the input's ``first_line``;
    ``memory_budgets`` as it says."""
    if content_type == codecs.CSV:
        rows = fastcsv.parse(chunk, num_features)
        if rows is None:
            rows = _clean_csv(chunk, num_features)
        if rows is not None:
            return rows
    try:
        return codecs.decode(chunk, content_type, num_features, memory_budgets=memory_budgets)
    except InvalidInput as exc:
        raise InvalidInput(shift_rows(str(exc), first_line - 1)) from None


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class JsonSplicer:
    """Joins per-chunk JSON documents ``{"predictions": [...]}`` into one, taking the framing
    from the codec's own output rather than repeating it here."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.tail: bytes | None = None

    def write(self, piece: bytes) -> None:
        start, end = piece.index(b"[") + 1, piece.rindex(b"]")
        if self.tail is None:
            self.sink.write(piece[:start])
            self.tail = piece[end:]
        else:
            self.sink.write(b", ")
        self.sink.write(piece[start:end])

    def close(self) -> None:
        if self.tail is not None:
            self.sink.write(self.tail)


def _check_deadline(deadline: float, timeout: float) -> None:
    if time.monotonic() > deadline:
        raise InvocationTimeout(
            f"processing took longer than the invocation timeout of {timeout} s"
        )


def predict_stream(
    model: XGBoostModel,
    source: IO[bytes],
    sink: Sink,
    *,
    content_type: str,
    accept: str,
    timeout: float,
    chunk_bytes: int,
    max_json_bytes: int,
    max_chunk_bytes: int | None = None,
    memory_budgets: Mapping[str, int] | None = None,
) -> int:
    """Score everything in ``source`` into ``sink``; returns the number of rows. JSON and
    RecordIO are read whole, up to ``max_json_bytes``; CSV and libsvm a chunk of whole lines
    at a time, none over ``max_chunk_bytes`` (``iter_line_chunks``). ``memory_budgets``: what
    each type's Python reader may take, against its estimate (``codecs.decode``)."""
    deadline = time.monotonic() + timeout
    if content_type in WHOLE_TYPES:
        body = source.read(max_json_bytes + 1)
        if len(body) > max_json_bytes:
            raise PayloadTooLarge(
                f"{content_type} inputs are decoded whole and are limited to {max_json_bytes} "
                "bytes here (max_json_bytes, less if the worker's memory cannot hold one per "
                "concurrent invocation); send large inputs as text/csv or text/libsvm, "
                "which stream, or give the worker more memory"
            )
        chunks: Iterator[tuple[int, bytes]] = iter([(1, body)])
    else:
        chunks = iter_line_chunks(source, chunk_bytes, max_chunk_bytes)
    splicer = JsonSplicer(sink) if accept == codecs.JSON else None
    rows = 0
    for first_line, chunk in chunks:
        _check_deadline(deadline, timeout)
        matrix = decode_chunk(chunk, content_type, model.num_features, first_line, memory_budgets)
        piece = fastcsv.encode(model.predict(matrix), accept, model.outputs)
        if splicer is not None:
            splicer.write(piece)
        else:
            sink.write(piece)
        rows += matrix.shape[0]
    if rows == 0:
        raise InvalidInput("empty input: expected at least one row")
    if splicer is not None:
        splicer.close()
    _check_deadline(deadline, timeout)
    return rows
