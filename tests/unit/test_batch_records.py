"""Batch record splitting: packing, byte ranges at line boundaries, gzip; all on in-memory
blocks."""

from __future__ import annotations

import gzip
import io
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infermodes.errors import StorageError
from infermodes.predict import codecs
from infermodes.workers.batch import records
from infermodes.workers.batch.records import BadRecord, MiniBatch
from tests.support.hostile import FIXED_SEED


def blocks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_multirecord_packs_whole_lines_up_to_the_limit() -> None:
    data = b"a,1\nbb,2\n\nccc,3\nd,4"
    batches = list(records.pack_lines(iter(blocks(data, 3)), 10))
    assert batches == [
        MiniBatch(1, b"a,1\nbb,2\n\n"),
        MiniBatch(4, b"ccc,3\nd,4"),
    ]
    assert b"".join(b.data for b in batches) == data


def test_a_record_over_the_limit_fails_naming_its_line() -> None:
    data = b"1,2\n3,4\n" + b"9" * 20 + b"\n5,6\n"
    with pytest.raises(BadRecord) as caught:
        list(records.pack_lines(iter(blocks(data, 4)), 10))
    assert caught.value.line == 3
    assert "larger than maxPayloadInMB" in caught.value.reason


def test_singlerecord_sends_one_line_at_a_time_with_its_number() -> None:
    data = b"1\n\n2\n3\n"
    batches = list(records.minibatches(iter([data]), "Line", "SingleRecord", 100))
    assert batches == [MiniBatch(1, b"1\n"), MiniBatch(3, b"2\n"), MiniBatch(4, b"3\n")]


def test_singlerecord_lines_end_at_lf_alone_as_multirecords_do() -> None:
    """A lone CR split a line in two and threw the numbering off (an error named line 5 of a
    three-line object); it stays in its line, which the codec then refuses, naming it."""
    data = b"1\r2\r3\n4\r\n5"
    batches = list(records.minibatches(iter([data]), "Line", "SingleRecord", 100))
    assert batches == [MiniBatch(1, b"1\r2\r3\n"), MiniBatch(2, b"4\r\n"), MiniBatch(3, b"5")]


def test_split_none_is_one_record_refused_over_the_limit() -> None:
    assert list(records.minibatches(iter([b"1\n", b"2\n"]), "None", "MultiRecord", 10)) == [
        MiniBatch(1, b"1\n2\n")
    ]
    with pytest.raises(BadRecord) as caught:  # it said "line 1: record is larger than ..."
        list(records.minibatches(iter([b"123456", b"789012"]), "None", "MultiRecord", 10))
    assert caught.value.line is None  # the object as a whole, sent so: no line of it is at fault
    assert caught.value.reason.startswith("the object is over maxPayloadInMB (")
    assert caught.value.reason.endswith(
        " MB), and splitType None sends it whole, as one request: give splitType Line to send "
        "its lines in mini-batches, or a larger maxPayloadInMB (at most 100)"
    )


def test_blank_input_gives_no_minibatch() -> None:
    assert list(records.pack_lines(iter([b"\n \n"]), 100)) == []
    assert list(records.whole_object(iter([]), 100)) == []


def ranged(data: bytes, start: int, end: int, size: int) -> bytes:
    source = data[max(start - 1, 0) :]
    return b"".join(records.line_range(iter(blocks(source, size)), start, end))


@pytest.mark.parametrize("seed", range(30))
def test_byte_ranges_cover_every_line_exactly_once(seed: int) -> None:
    rng = random.Random(seed)
    lines = [b"x" * rng.randint(0, 12) for _ in range(rng.randint(0, 40))]
    data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
    parts = rng.randint(1, 7)
    bounds = [len(data) * i // parts for i in range(parts + 1)]
    pieces = [ranged(data, bounds[i], bounds[i + 1], rng.randint(1, 9)) for i in range(parts)]
    assert b"".join(pieces) == data
    for index, piece in enumerate(pieces):
        if any(pieces[index + 1 :]):
            assert piece == b"" or piece.endswith(b"\n")


def test_a_range_inside_one_long_line_is_empty() -> None:
    data = b"short\n" + b"y" * 50 + b"\nend\n"
    assert ranged(data, 10, 30, 4) == b""
    assert ranged(data, 0, 10, 4) == b"short\n" + b"y" * 50 + b"\n"
    assert ranged(data, 30, len(data), 4) == b"end\n"


def test_a_range_starting_just_after_a_newline_keeps_that_line() -> None:
    data = b"aaa\nbbb\nccc\n"
    assert ranged(data, 0, 4, 2) == b"aaa\n"
    assert ranged(data, 4, 8, 2) == b"bbb\n"
    assert ranged(data, 8, 12, 2) == b"ccc\n"


def test_gunzip_streams_concatenated_members_in_bounded_pieces() -> None:
    data = b"1,2,3\n" * 5000
    compressed = gzip.compress(data[:9000]) + gzip.compress(data[9000:])
    pieces = list(records.gunzip(iter(blocks(compressed, 100)), 1024))
    assert b"".join(pieces) == data
    assert max(len(piece) for piece in pieces) <= 1024


def test_a_truncated_or_broken_gzip_stream_fails_the_object() -> None:
    compressed = gzip.compress(b"1\n" * 100)
    with pytest.raises(BadRecord, match="truncated") as caught:
        list(records.gunzip(iter([compressed[:-8]]), 64))
    assert caught.value.line is None
    with pytest.raises(BadRecord, match="not a valid gzip stream"):
        list(records.gunzip(iter([b"1,2,3\n" * 10]), 64))


def test_read_blocks_reads_the_whole_stream() -> None:
    assert list(records.read_blocks(io.BytesIO(b"abcdefg"), 3)) == [b"abc", b"def", b"g"]


# inputs of lines, blank ones and long ones among them, joined by newlines
LINES = st.lists(st.sampled_from([b"", b" ", b"1", b"12,3", b"1234567", b"x" * 12]), max_size=30)


def _packed_by_spec(data: bytes, limit: int) -> list[records.MiniBatch] | str:
    """The platform's MultiRecord packing, written plainly over the whole input."""
    out: list[records.MiniBatch] = []
    first_line = 1
    while len(data) > limit:
        cut = data.rfind(b"\n", 0, limit) + 1
        if cut == 0:
            return f"line {first_line}"
        if data[:cut].strip():
            out.append(records.MiniBatch(first_line, data[:cut]))
        first_line += data[:cut].count(b"\n")
        data = data[cut:]
    if data.strip():
        out.append(records.MiniBatch(first_line, data))
    return out


@FIXED_SEED
@given(
    lines=LINES,
    block=st.integers(1, 20),
    limit=st.integers(1, 24),
)
def test_packing_does_not_depend_on_the_blocks(lines: list[bytes], block: int, limit: int) -> None:
    data = b"\n".join(lines)
    assert _packed(data, block, limit) == _packed_by_spec(data, limit)


def _packed(
    data: bytes, block: int, limit: int, budget: records.MemoryBudget | None = None
) -> list[records.MiniBatch] | str:
    """``pack_lines`` over ``data`` in blocks of ``block`` bytes; a refusal as its line."""
    try:
        return list(records.pack_lines(iter(blocks(data, block)), limit, budget))
    except records.BadRecord as exc:
        return f"line {exc.line}"


class FailingSource(io.BytesIO):
    def read(self, size: int | None = -1, /) -> bytes:
        if self.tell():
            raise OSError(5, "Input/output error")
        return super().read(size)


def test_a_read_that_fails_is_a_storage_error_of_its_object_not_of_the_instance() -> None:
    blocks = records.read_blocks(FailingSource(b"1,2\n" * 4), 8)
    assert next(blocks) == b"1,2\n1,2\n"
    with pytest.raises(StorageError, match="cannot read the input: Input/output error"):
        next(blocks)


def _refused(line: int, size: int, rows: int, whole: bool) -> BadRecord:
    return BadRecord(line, f"over the memory: {size} bytes, {rows} rows, whole {whole}")


# 10 a row + 1 a byte, 40 bytes of memory: one line of 30 bytes is exactly at it
BUDGET = records.MemoryBudget(codecs.ReadCost(10, 1, 1), 40, _refused)


def test_a_line_over_the_memory_alone_is_refused_by_the_budgets_refusal_naming_its_line() -> None:
    """A line whose estimate alone (one row) is over the memory's share of a mini-batch fails
    with the refusal the caller gives (which names the memory), at the line it starts on, its
    whole size given; shorter lines are packed. With splitType None the object is the
    record, refused by what was read of it once its estimate is over."""
    data = b"1\n2\n" + b"3" * 30 + b"\n4\n"
    batches = records.minibatches(iter([data]), "Line", "MultiRecord", 100, BUDGET)
    assert next(batches) == MiniBatch(1, b"1\n2\n")
    with pytest.raises(BadRecord, match="line 3: over the memory: 31 bytes, 1 rows, whole True"):
        next(batches)
    refused = "line 1: over the memory: 33 bytes, 3 rows, whole False"  # 10 x 3 + 33 > 40
    with pytest.raises(BadRecord, match=refused):
        list(records.minibatches(iter(blocks(data, 33)), "None", "MultiRecord", 100, BUDGET))
    assert list(records.whole_object(iter([b"1\n", b"2", b"3\n"]), 100, BUDGET)) == [
        MiniBatch(1, b"1\n23\n")  # 10 x 2 + 6: its two lines
    ]
    with pytest.raises(BadRecord, match="line 1: over the memory: 11 bytes, 3 rows, whole"):
        list(records.whole_object(iter([b"1\n", b"2\n", b"3456789"]), 100, BUDGET))


def test_a_line_exactly_at_the_memory_is_read_and_one_byte_over_is_refused() -> None:
    """The estimate of a single line (10 + its bytes, its newline counted) may equal the
    budget; one byte more is over, whatever the blocks it comes in."""
    at = b"x" * 29 + b"\n"  # 10 + 30 = 40
    for size in (1, 7, 64):
        assert list(records.pack_lines(iter(blocks(at + b"1\n", size)), 100, BUDGET)) == [
            MiniBatch(1, at),
            MiniBatch(2, b"1\n"),
        ]
        with pytest.raises(BadRecord, match="line 2: over the memory: 31 bytes, 1 rows, whole"):
            list(records.pack_lines(iter(blocks(b"1\nx" + at, size)), 100, BUDGET))


def test_a_line_longer_than_what_is_read_is_refused_by_its_part_read() -> None:
    """A line with no end in sight (a hostile one of gigabytes) is refused as soon as what was
    read of it is over, not read to its end to be measured."""
    endless = iter([b"y" * 16] * 1000)
    with pytest.raises(BadRecord, match="line 1: over the memory: 32 bytes, 1 rows, whole False"):
        list(records.pack_lines(endless, 10_000, BUDGET))
    assert len(list(endless)) == 998


def test_many_narrow_rows_make_a_small_minibatch_and_a_wide_row_a_large_one() -> None:
    """Each row costs 10 beside its bytes: three rows of 2 bytes (36) fill a mini-batch of 6
    bytes, while a wide row after them is read alone at 30 bytes; maxPayloadInMB's bytes hold
    too."""
    narrow = b"1\n" * 7
    wide = b"2" * 29 + b"\n"
    assert list(records.pack_lines(iter(blocks(narrow + wide, 4)), 100, BUDGET)) == [
        MiniBatch(1, b"1\n" * 3),
        MiniBatch(4, b"1\n" * 3),
        MiniBatch(7, b"1\n"),
        MiniBatch(8, wide),
    ]
    with pytest.raises(BadRecord, match="line 8: record is larger than maxPayloadInMB"):
        list(records.pack_lines(iter([narrow + wide]), 20, BUDGET))


def test_sparse_rows_of_a_wide_model_are_packed_by_their_matrix() -> None:
    """A row's matrix costs the model's width x 4 bytes whatever its bytes: with 3 features
    (12 a row) beside 10 a row + 1 a byte, two 2-byte rows (2 x 22 + 4 = 48) are over 40 where
    three were within it without the width; a row alone (22 + 2) is read."""
    budget = records.MemoryBudget(codecs.ReadCost(10, 1, 1), 40, _refused, width=3)
    assert list(records.pack_lines(iter(blocks(b"1\n" * 3, 2)), 100, budget)) == [
        MiniBatch(1, b"1\n"),
        MiniBatch(2, b"1\n"),
        MiniBatch(3, b"1\n"),
    ]
    wide = records.MemoryBudget(codecs.ReadCost(10, 1, 1), 40, _refused, width=8)
    with pytest.raises(BadRecord, match="line 1: over the memory: 2 bytes, 1 rows, whole True"):
        list(records.pack_lines(iter([b"1\n"]), 100, wide))  # 10 + 2 + 32 > 40


def _packed_within(data: bytes, limit: int, budget: records.MemoryBudget) -> list[MiniBatch] | str:
    """Row-aware packing written plainly: whole lines, one at a time, while the mini-batch's
    bytes are within ``limit`` and its estimate (a row a line) within ``budget``."""
    pieces = data.split(b"\n")
    lines = [piece + b"\n" for piece in pieces[:-1]] + [pieces[-1]] * bool(pieces[-1])
    out: list[MiniBatch] = []
    batch, rows, first_line = b"", 0, 1
    for line in lines:
        if len(batch) + len(line) <= limit and budget.holds(rows + 1, len(batch) + len(line)):
            batch, rows = batch + line, rows + 1
            continue
        if not batch:
            return f"line {first_line}"
        if batch.strip():
            out.append(MiniBatch(first_line, batch))
        first_line += rows
        batch, rows = line, 1
        if len(line) > limit or not budget.holds(1, len(line)):
            return f"line {first_line}"
    if batch.strip():
        out.append(MiniBatch(first_line, batch))
    return out


# up to 12 a row + 3 a byte within up to 80 bytes: a few short lines a mini-batch at most
BUDGETS = st.builds(
    records.MemoryBudget,
    st.builds(codecs.ReadCost, st.integers(0, 12), st.integers(1, 3), st.just(1)),
    st.integers(1, 80),
    st.just(_refused),
)


@FIXED_SEED
@given(lines=LINES, block=st.integers(1, 20), limit=st.integers(1, 40), budget=BUDGETS)
def test_row_aware_packing_takes_every_line_that_fits_whatever_the_blocks(
    lines: list[bytes], block: int, limit: int, budget: records.MemoryBudget
) -> None:
    data = b"\n".join(lines)
    assert _packed(data, block, limit, budget) == _packed_within(data, limit, budget)
