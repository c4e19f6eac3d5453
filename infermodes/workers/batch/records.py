"""From a stream of bytes to mini-batches: decompression, byte ranges cut at line boundaries,
and the platform's record packing. Everything works on iterators of blocks, so memory is a few
blocks plus one mini-batch, whatever the object's size, and nothing here does I/O itself.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from infermodes.errors import StorageError
from infermodes.predict import codecs
from infermodes.predict.fastcsv import count_lines
from infermodes.settings import BatchStrategy, SplitType

MIB = 1024 * 1024


class BadRecord(Exception):
    """Input that cannot be transformed (retrying does not help): it fails its object, and the
    summary names the object, this line and the reason."""

    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(reason if line is None else f"line {line}: {reason}")
        self.line = line  # None: the object as a whole (e.g. a broken gzip stream)
        self.reason = reason

    def __reduce__(self) -> tuple[type[BadRecord], tuple[int | None, str]]:
        return BadRecord, (self.line, self.reason)  # crosses from worker processes


Refusal = Callable[[int], BadRecord]  # why the record at this line is over the limit


def too_large(line: int, limit: int) -> BadRecord:
    return BadRecord(line, f"record is larger than maxPayloadInMB ({limit / MIB:g} MB)")


@dataclass(frozen=True)
class MiniBatch:
    """Whole lines of input (blank ones included, so line numbers stay true) and the number of
    its first line within its object (or byte range)."""

    first_line: int
    data: bytes


def read_blocks(source: IO[bytes], block_bytes: int) -> Iterator[bytes]:
    """The input in blocks; a read that fails fails its object (``StorageError``), not the
    instance."""
    try:
        while block := source.read(block_bytes):
            yield block
    except OSError as exc:
        raise StorageError(f"cannot read the input: {exc.strerror or exc}") from None


def gunzip(blocks: Iterator[bytes], block_bytes: int) -> Iterator[bytes]:
    """Decompress gzip (concatenated members too), never more than ``block_bytes`` at once,
    so a small compressed block cannot blow up memory. A broken or truncated stream fails."""
    decoder = zlib.decompressobj(wbits=31)
    in_member = False
    try:
        for block in blocks:
            data = block
            while data:
                in_member = True
                out = decoder.decompress(data, block_bytes)
                if out:
                    yield out
                if decoder.eof:
                    in_member = False
                    data = decoder.unused_data
                    decoder = zlib.decompressobj(wbits=31)
                else:
                    data = decoder.unconsumed_tail
    except zlib.error as exc:
        raise BadRecord(None, f"not a valid gzip stream: {exc}") from None
    if in_member:
        raise BadRecord(None, "the gzip stream ends early: the object is truncated")


def not_gzip(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """An object's blocks, from its start, read as not compressed: one that starts like gzip
    fails naming the setting, not the first byte its decoder trips on."""
    head = b""
    for block in blocks:
        if len(head) < len(codecs.GZIP_MAGIC):
            head += block[: len(codecs.GZIP_MAGIC)]
            if head[: len(codecs.GZIP_MAGIC)] == codecs.GZIP_MAGIC:
                raise BadRecord(
                    None,
                    "the object is gzip-compressed (it starts with 1f 8b): give compressionType "
                    "Gzip (--compression-type Gzip)",
                )
        yield block


def line_range(blocks: Iterator[bytes], start: int, end: int) -> Iterator[bytes]:
    """The records that start in ``[start, end)`` of an object, given its blocks from byte
    ``start - 1`` on (from 0 when ``start`` is 0). A range starting inside a line skips to the
    next line; the last record runs past ``end`` to its newline (or to the end of the object)."""
    position = start - 1 if start > 0 else 0
    if start > 0:
        for block in blocks:
            newline = block.find(b"\n")
            if newline >= 0:
                position += newline + 1
                block = block[newline + 1 :]
                break
            position += len(block)
        else:
            return
        if position >= end:
            return
        yield from _until_end(_chain(block, blocks), position, end)
    else:
        yield from _until_end(blocks, position, end)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _until_end(blocks: Iterator[bytes], position: int, end: int) -> Iterator[bytes]:
    """Blocks from ``position`` on, up to the first newline at or after ``end - 1``."""
    for block in blocks:
        if position + len(block) < end:
            yield block
            position += len(block)
            continue
        newline = block.find(b"\n", max(0, end - 1 - position))
        if newline >= 0:
            yield block[: newline + 1]
            return
        yield block
        position += len(block)


def has_record(data: bytes) -> bool:
    """Anything but whitespace (``bytes.strip`` would copy a whole mini-batch to say so)."""
    return bool(data) and not data.isspace()


def pack_lines(
    blocks: Iterator[bytes], limit: int, refusal: Refusal | None = None
) -> Iterator[MiniBatch]:
    """MultiRecord: as many whole lines as fit in ``limit`` bytes per mini-batch. Blocks are
    kept as they come and joined once per mini-batch: its bytes are copied once. A line over
    ``limit`` is refused (``refusal``, when the limit is not maxPayloadInMB's)."""
    parts: list[bytes] = []
    size = 0
    first_line = 1
    for block in blocks:
        while size + len(block) > limit:
            cut = block.rfind(b"\n", 0, limit - size) + 1
            if cut:
                chunk, block = b"".join([*parts, block[:cut]]), block[cut:]
            else:  # no line ends in this block's share: the cut lies in an earlier block
                data = b"".join([*parts, block])
                cut = data.rfind(b"\n", 0, limit) + 1
                if cut == 0:
                    raise (refusal or functools.partial(too_large, limit=limit))(first_line)
                chunk, block = data[:cut], data[cut:]
            parts, size = [], 0
            if has_record(chunk):
                yield MiniBatch(first_line, chunk)
            first_line += count_lines(chunk)
        if block:
            parts.append(block)
            size += len(block)
    chunk = b"".join(parts)
    if has_record(chunk):
        yield MiniBatch(first_line, chunk)


def single_lines(batches: Iterator[MiniBatch]) -> Iterator[MiniBatch]:
    """SingleRecord: one non-blank line per mini-batch. Lines end at LF alone, as
    MultiRecord's do (``splitlines`` also split at a lone CR, and numbered lines apart)."""
    for batch in batches:
        lines = batch.data.split(b"\n")
        for offset, line in enumerate(lines):
            if line.strip():
                ended = offset < len(lines) - 1  # as the object has it
                yield MiniBatch(batch.first_line + offset, line + b"\n" if ended else line)


def whole_object(
    blocks: Iterator[bytes], limit: int, refusal: Refusal | None = None
) -> Iterator[MiniBatch]:
    """SplitType None: the object is one record, refused when it is over ``limit`` (with
    ``refusal``, when the limit is not maxPayloadInMB's), before it is read whole."""
    data = bytearray()
    for block in blocks:
        data += block
        if len(data) > limit:
            raise (refusal or functools.partial(too_large, limit=limit))(1)
    if data.strip():
        yield MiniBatch(1, bytes(data))


def minibatches(
    blocks: Iterator[bytes],
    split_type: SplitType,
    strategy: BatchStrategy,
    limit: int,
    refusal: Refusal | None = None,
) -> Iterator[MiniBatch]:
    """``refusal``: why a record (a whole object, SplitType None; a line) over ``limit`` is
    refused, given its first line, when the limit is not maxPayloadInMB's (the memory a
    mini-batch read in Python may take)."""
    if split_type == "None":
        return whole_object(blocks, limit, refusal)
    packed = pack_lines(blocks, limit, refusal)
    return single_lines(packed) if strategy == "SingleRecord" else packed
