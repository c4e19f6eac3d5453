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
    with pytest.raises(BadRecord, match="line 1: record is larger"):
        list(records.minibatches(iter([b"123456", b"789012"]), "None", "MultiRecord", 10))


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
    lines=st.lists(st.sampled_from([b"", b" ", b"1", b"12,3", b"1234567", b"x" * 12]), max_size=30),
    block=st.integers(1, 20),
    limit=st.integers(1, 24),
)
def test_packing_does_not_depend_on_the_blocks(lines: list[bytes], block: int, limit: int) -> None:
    data = b"\n".join(lines)
    expected = _packed_by_spec(data, limit)
    try:
        got: list[records.MiniBatch] | str = list(
            records.pack_lines(iter(blocks(data, block)), limit)
        )
    except records.BadRecord as exc:
        got = f"line {exc.line}"
    assert got == expected


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


def test_a_line_over_a_limit_not_maxpayloadinmbs_is_refused_by_its_refusal_naming_its_line() -> (
    None
):
    """A line longer than the memory's share of a mini-batch fails with the refusal the caller
    gives (which names the memory), at the line it starts on; shorter lines are packed."""
    data = b"1\n2\n" + b"3" * 20 + b"\n4\n"

    def refusal(line: int) -> BadRecord:
        return BadRecord(line, "over the memory")

    batches = records.minibatches(iter([data]), "Line", "MultiRecord", 10, refusal)
    assert next(batches) == MiniBatch(1, b"1\n2\n")
    with pytest.raises(BadRecord, match="line 3: over the memory"):
        next(batches)
    with pytest.raises(BadRecord, match="line 1: over the memory"):
        list(records.minibatches(iter([data]), "None", "MultiRecord", 10, refusal))
