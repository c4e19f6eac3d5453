"""From a stream of bytes to mini-batches: decompression, byte ranges cut at line boundaries,
and the platform's record packing. Everything works on iterators of blocks, so memory is a few
blocks plus one mini-batch, whatever the object's size, and nothing here does I/O itself.
"""

from __future__ import annotations

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


Refusal = Callable[[int, int, int, bool], BadRecord]
"""Why a record over the memory is refused: its first line, its size (what was read of it, when
not ``whole``), its rows, and whether the size is the record's whole."""


@dataclass(frozen=True)
class MemoryBudget:
    """The memory a mini-batch read in Python may take (``bytes``), against its reader's
    estimate from its rows and bytes (``cost``): many narrow rows make a small mini-batch, a
    few wide ones a large one, and a record alone over it is refused (``refusal``)."""

    cost: codecs.ReadCost
    bytes: int
    refusal: Refusal
    width: int = 0  # the model's features: the matrix a sparse row costs (``ReadCost.estimate``)

    def holds(self, rows: int, size: int) -> bool:
        return self.cost.estimate(rows, size, self.width) <= self.bytes


def too_large(line: int, limit: int) -> BadRecord:
    return BadRecord(line, f"record is larger than maxPayloadInMB ({limit / MIB:g} MB)")


@dataclass(frozen=True)
class MiniBatch:
    """Whole lines of input (blank ones included, so line numbers stay true) and the number of
    its first line within its object (or byte range)."""

    first_line: int
    data: bytes


def read_blocks(source: IO[bytes], block_bytes: int) -> Iterator[bytes]:
    """The input in blocks; a read that fails is the store's failure (``StorageError``),
    which ends the instance to run again (``Runner.unit``), not a fault of its object."""
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
                    "Gzip (the API's TransformInput.CompressionType, the CLI's "
                    "--compression-type)",
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


def _fits(size: int, rows: int, limit: int, budget: MemoryBudget | None) -> bool:
    return size <= limit and (budget is None or budget.holds(rows, size))


def line_end_within(
    data: bytes, size: int, rows: int, limit: int, budget: MemoryBudget | None
) -> int:
    """Where the last whole line of ``data`` ends that a mini-batch already holding ``size``
    bytes in ``rows`` lines can take within ``limit`` bytes and the ``budget``'s memory; 0 when
    not even its first. The estimate grows with every byte taken, so the longest prefix it
    holds is found by bisection, each step counting in C the lines between the longest prefix
    known to hold and the one it tries (about twice the prefix's bytes in all)."""
    end = min(len(data), limit - size)
    if budget is not None:
        cost = budget.cost  # the rows add to the estimate: the bytes alone bound the prefix
        low, high = 0, min(end, (budget.bytes - rows * cost.per_row) // cost.per_byte - size)
        lines = rows  # of the prefix data[:low] and what the mini-batch holds
        while low < high:
            middle = (low + high + 1) // 2
            tried = lines + data.count(b"\n", low, middle)
            if budget.holds(tried, size + middle):
                low, lines = middle, tried
            else:
                high = middle - 1
        end = max(low, 0)
    return data.rfind(b"\n", 0, end) + 1


def _refused_line(
    data: bytes, first_line: int, limit: int, budget: MemoryBudget | None
) -> BadRecord:
    """Why the line ``data`` starts with is refused: over the memory at its estimate alone (a
    single row), else over ``limit``. A line longer than ``data`` is named by what was read."""
    end = data.find(b"\n") + 1
    size = end or len(data)
    if budget is not None and not budget.holds(1, size):
        return budget.refusal(first_line, size, 1, end > 0)
    return too_large(first_line, limit)


def pack_lines(
    blocks: Iterator[bytes], limit: int, budget: MemoryBudget | None = None
) -> Iterator[MiniBatch]:
    """MultiRecord: as many whole lines as fit in ``limit`` bytes per mini-batch, and within
    ``budget``'s memory at its estimate, when one is given. Blocks are kept as they come and
    joined once per mini-batch: its bytes are copied once. A line over either is refused."""
    parts: list[bytes] = []
    size = rows = 0  # of parts; rows: the lines that end in them
    first_line = 1
    for block in blocks:
        ended = 0 if budget is None else block.count(b"\n")
        # + 1: the line the block ends inside, if it does
        while not _fits(size + len(block), rows + ended + 1, limit, budget):
            cut = line_end_within(block, size, rows, limit, budget)
            if cut:
                chunk, block = b"".join([*parts, block[:cut]]), block[cut:]
            else:  # no line ends in this block's share: the cut lies in an earlier block
                data = b"".join([*parts, block])
                cut = line_end_within(data, 0, 0, limit, budget)
                if cut == 0:
                    raise _refused_line(data, first_line, limit, budget)
                chunk, block = data[:cut], data[cut:]
            lines = count_lines(chunk)
            if budget is not None:  # what the chunk took of the block's
                ended -= lines - rows
            parts, size, rows = [], 0, 0
            if has_record(chunk):
                yield MiniBatch(first_line, chunk)
            first_line += lines
        if block:
            parts.append(block)
            size += len(block)
            rows += ended
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
    blocks: Iterator[bytes], limit: int, budget: MemoryBudget | None = None
) -> Iterator[MiniBatch]:
    """SplitType None: the object is one record, refused when it is over ``limit`` or the
    ``budget``'s memory at its estimate, before it is read whole."""
    data = bytearray()
    ended = 0  # lines
    for block in blocks:
        data += block
        if budget is not None:
            ended += block.count(b"\n")
            rows = ended + (not data.endswith(b"\n"))  # and the one it ends inside
            if not budget.holds(rows, len(data)):
                raise budget.refusal(1, len(data), rows, False)
        if len(data) > limit:
            raise BadRecord(
                None,
                f"the object is over maxPayloadInMB ({limit / MIB:g} MB), and splitType None "
                "sends it whole, as one request: give splitType Line to send its lines in "
                "mini-batches, or a larger maxPayloadInMB (at most 100)",
            )
    if data.strip():
        yield MiniBatch(1, bytes(data))


def minibatches(
    blocks: Iterator[bytes],
    split_type: SplitType,
    strategy: BatchStrategy,
    limit: int,
    budget: MemoryBudget | None = None,
) -> Iterator[MiniBatch]:
    """``budget``: the memory a mini-batch read in Python may take, at its reader's estimate
    (None: the native readers take it, and ``limit``, maxPayloadInMB's, alone holds)."""
    if split_type == "None":
        return whole_object(blocks, limit, budget)
    packed = pack_lines(blocks, limit, budget)
    return single_lines(packed) if strategy == "SingleRecord" else packed
