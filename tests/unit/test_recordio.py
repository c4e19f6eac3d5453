"""The RecordIO-protobuf decoder: the SDK's bytes read back exactly, dense and sparse; anything
malformed is a 400 naming the record, anything too large a 413, never another exception."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infermodes.errors import InfermodesError, InvalidInput, PayloadTooLarge
from infermodes.predict import codecs, recordio
from tests.support import recordio as rio
from tests.support.hostile import PROFILES

# Serialized once by the real protobuf package (7.36.2) from the platform's record.proto, framed
# as the SDK's _write_recordio frames: the test writer produces these bytes exactly.
PROTOBUF_WRITTEN = {
    "dense_f32_label": "0a23d7ce300000000a1a0a0676616c7565731210120e0a0c0000c03f000000c00000803e"
    "12120a0676616c756573120812060a040000803f",
    "dense_f64": "0a23d7ce280000000a260a0676616c756573121c1a1a0a18000000000000f83f00000000000000"
    "c0000000000000d03f",
    "dense_i32": "0a23d7ce1c0000000a1a0a0676616c75657312103a0e0a0c03f9ffffffffffffffff0100",
    "sparse": "0a23d7ce1f0000000a1d0a0676616c756573121312110a08000080400000003f120200021a010300",
}


def decode(body: bytes, width: int | None = 3, **limits: int) -> np.ndarray:
    return codecs.decode(body, codecs.RECORDIO, width, **limits)


def test_the_test_writer_writes_what_protobuf_writes() -> None:
    written = {
        "dense_f32_label": rio.frame(rio.record(rio.tensor([1.5, -2.0, 0.25]), rio.tensor([1.0]))),
        "dense_f64": rio.frame(rio.record(rio.tensor([1.5, -2.0, 0.25], kind="float64"))),
        "dense_i32": rio.frame(rio.record(rio.tensor([3, -7, 0], kind="int32"))),
        "sparse": rio.frame(rio.record(rio.tensor([4.0, 0.5], keys=[0, 2], shape=[3]))),
    }
    assert {name: body.hex() for name, body in written.items()} == PROTOBUF_WRITTEN


@pytest.mark.parametrize(
    ("name", "row"),
    [
        ("dense_f32_label", [1.5, -2.0, 0.25]),
        ("dense_f64", [1.5, -2.0, 0.25]),
        ("dense_i32", [3.0, -7.0, 0.0]),
        ("sparse", [4.0, np.nan, 0.5]),
    ],
)
def test_protobuf_written_records_decode(name: str, row: list[float]) -> None:
    got = decode(bytes.fromhex(PROTOBUF_WRITTEN[name]))
    np.testing.assert_array_equal(got, np.array([row], dtype=np.float32))


def test_dense_and_sparse_rows_mix_and_keep_their_order() -> None:
    matrix = np.array([[1, 2, 3], [np.nan, 5, np.nan], [np.nan] * 3, [7, 8, 9]], np.float32)
    body = rio.dense(matrix[:2]) + rio.sparse(matrix[2:])
    np.testing.assert_array_equal(decode(body), matrix)
    np.testing.assert_array_equal(decode(rio.sparse(matrix)), matrix)
    np.testing.assert_array_equal(decode(rio.dense(matrix[:1]), None), matrix[:1])


def test_unpacked_repeated_fields_are_read_too() -> None:
    """proto2 writers may send repeated scalars one by one; protobuf readers accept both."""
    values = b"".join(b"\x0d" + struct.pack("<f", v) for v in (1.0, 2.0))  # field 1, fixed32
    keys = b"\x10\x00\x10\x02"  # field 2 varints 0 and 2
    shape = b"\x18\x03"
    body = rio.frame(rio.record(rio.field(2, values + keys + shape)))
    np.testing.assert_array_equal(decode(body), np.array([[1.0, np.nan, 2.0]], np.float32))


@pytest.mark.parametrize("kind", ["float32", "float64", "int32"])
def test_unpacked_rows_decode_as_their_packed_twins(kind: str) -> None:
    """Every tensor type, dense and sparse, its values, keys and shape each a field of their
    own: read into the rows the packed encoding gives, the varints' signs and all."""
    rows = [([3, -7, 0, 2**31 - 1], None, None), ([-(2**31), 5], [3, 0], [4])]
    bodies = {
        packed: b"".join(
            rio.frame(rio.record(rio.tensor(values, keys, shape, kind=kind, packed=packed)))
            for values, keys, shape in rows
        )
        for packed in (True, False)
    }
    assert bodies[True] != bodies[False]
    expected = np.array([[3, -7, 0, 2**31 - 1], [5, np.nan, np.nan, -(2**31)]], np.float32)
    for body in bodies.values():
        np.testing.assert_array_equal(decode(body, 4), expected)


_TENSOR_NUMBER = {"float32": (2, "<f4"), "float64": (3, "<f8")}


def _two_runs(values: list[float], keys: list[int] | None, width: int, kind: str) -> bytes:
    """A record whose values are two packed runs (protobuf readers join them; the first may be
    empty): what the reader fills a run at a time, as it fills unpacked values."""
    number, dtype = _TENSOR_NUMBER[kind]
    raw = np.asarray(values, dtype=dtype).tobytes()
    half = len(values) // 2 * np.dtype(dtype).itemsize
    fields = rio.field(1, raw[:half]) + rio.field(1, raw[half:])
    if keys is not None:
        fields += rio.field(2, b"".join(rio.varint(key) for key in keys))
        fields += rio.field(3, rio.varint(width))
    return rio.frame(rio.record(rio.field(number, fields)))


@st.composite
def _records(draw: st.DrawFn) -> tuple[int, str, list[tuple[list[float], list[int] | None]]]:
    width = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(sorted(_TENSOR_NUMBER)))
    floats = st.floats(allow_nan=True, allow_infinity=True, width=32 if kind == "float32" else 64)
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):  # dense, at times of the wrong width
            count = draw(st.sampled_from([width, width, width + 1]))
            rows.append((draw(st.lists(floats, min_size=count, max_size=count)), None))
        else:  # sparse, its keys at times repeated or out of range
            keys = draw(st.lists(st.integers(0, width), max_size=width, unique=draw(st.booleans())))
            rows.append((draw(st.lists(floats, min_size=len(keys), max_size=len(keys))), keys))
    return width, kind, rows


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_one_packed_run_decodes_as_the_same_values_unpacked_or_in_two_runs(profile: object) -> None:
    """A record's values in one packed run (what the SDK writes) are filled from the run the
    count found; written unpacked or as two runs they take the reader's other path: the same
    records, dense or sparse, of either float type, give the same matrix or the same error
    (a value beyond float32, a wrong width, a key twice or out of range) by every path."""

    @given(records=_records())
    def check(records: tuple[int, str, list[tuple[list[float], list[int] | None]]]) -> None:
        width, kind, rows = records
        shape = [width]
        bodies = [
            b"".join(
                rio.frame(
                    rio.record(
                        rio.tensor(
                            values,
                            keys,
                            None if keys is None else shape,
                            kind=kind,
                            packed=packed,
                        )
                    )
                )
                for values, keys in rows
            )
            for packed in (True, False)
        ]
        bodies.append(b"".join(_two_runs(values, keys, width, kind) for values, keys in rows))
        outcomes: list[np.ndarray | str] = []
        for body in bodies:
            try:
                outcomes.append(decode(body, width))
            except InvalidInput as exc:
                outcomes.append(str(exc))
        packed = outcomes[0]
        for other in outcomes[1:]:
            if isinstance(packed, str) or isinstance(other, str):
                assert other == packed
            else:  # NaN is missing, whatever its bits (an unpacked one goes through a float)
                assert np.array_equal(other, packed, equal_nan=True)

    profile(check)()  # type: ignore[operator]


def test_one_packed_run_is_filled_without_walking_the_record_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The count keeps a packed run of floats, and the row is filled from it (one view): the
    record's fields are not walked a second time, as they are for values in many fields."""
    walked: list[int] = []
    runs = recordio._runs

    def counted_runs(
        message: memoryview, number: int, record: int, what: str
    ) -> Iterator[int | memoryview]:
        walked.append(record)
        return runs(message, number, record, what)

    monkeypatch.setattr(recordio, "_runs", counted_runs)
    rows = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    for kind in _TENSOR_NUMBER:
        np.testing.assert_array_equal(decode(rio.dense(rows, kind)), rows)
    assert walked == []
    two_runs = b"".join(_two_runs(list(row), None, 3, "float32") for row in rows)
    np.testing.assert_array_equal(decode(two_runs), rows)
    assert walked == [1, 2]


def test_every_truncation_is_a_400_naming_a_record() -> None:
    body = rio.dense(np.array([[1, 2, 3], [4, 5, 6]], np.float32)) + bytes.fromhex(
        PROTOBUF_WRITTEN["sparse"]
    )
    for end in range(1, len(body)):
        try:
            decode(body[:end])
        except InvalidInput as exc:
            assert str(exc).startswith("record "), str(exc)
        else:  # only a cut at a frame boundary leaves whole records
            assert body[end : end + 4] == struct.pack("<I", rio.MAGIC), end


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty request body"),
        (rio.frame(b"", magic=0xDEADBEEF), "record 1: bad magic number 0xdeadbeef at byte 0"),
        (rio.dense(np.ones((1, 3))) + b"\x0a\x23", "record 2: 2 byte(s) at the end"),
        (rio.frame(rio.record(rio.tensor([1, 2, 3])), flags=1), "record 1: flags 1"),
        (rio.frame(rio.record(rio.tensor([1, 2, 3]))[:-1]), "record 1: truncated field 1 in"),
        (rio.frame(b"\x0b"), "record 1: unsupported wire type start group of field 1"),
        (rio.frame(b"\x0e"), "record 1: unsupported wire type reserved (6) of field 1"),
        (rio.frame(b"\x0a\x05ab"), "record 1: truncated field 1 in the Record"),
        (rio.frame(b"\x0a" + b"\xff" * 11), "record 1: a varint longer than 10 bytes"),
        (rio.frame(b"\x08"), "record 1: truncated varint"),
        (rio.frame(b"\x00\x00"), "record 1: field number 0"),
        (rio.frame(b""), "record 1: no feature named 'values'"),
        (rio.frame(rio.record(rio.field(9, b""))), "record 1: the 'values' feature holds Bytes"),
        (rio.frame(rio.record(b"")), "record 1: the 'values' feature holds no Float32"),
        (
            rio.frame(rio.record(rio.tensor([1, 2, 3]) + rio.tensor([1, 2, 3], kind="float64"))),
            "record 1: the 'values' feature holds more than one tensor",
        ),
        (
            rio.frame(rio.record(rio.tensor([1, 2, 3])) + rio.record(rio.tensor([1, 2, 3]))),
            "record 1: the feature 'values' appears twice",
        ),
        (rio.frame(rio.record(rio.field(2, rio.field(1, b"abc")))), "not whole f4s"),
        (rio.dense(np.ones((1, 3))) + rio.dense(np.ones((1, 2))), "row 2: expected 3 features"),
        (rio.frame(rio.record(rio.tensor([1.0], keys=[3], shape=[3]))), "feature index 3 is out"),
        (rio.frame(rio.record(rio.tensor([1.0, 2.0], keys=[1, 1]))), "appears twice"),
        (rio.frame(rio.record(rio.tensor([1.0, 2.0], keys=[1]))), "1 keys for 2 values"),
        (rio.frame(rio.record(rio.tensor([1.0], keys=[1], shape=[4]))), "shape [4] does not"),
        (
            rio.frame(rio.record(rio.tensor([1.0, 2.0, np.inf]))),
            "record 1, feature index 2: a value",
        ),
        (rio.frame(rio.record(rio.tensor([1.0, 2.0, 1e300], kind="float64"))), "beyond the range"),
        (rio.frame(rio.record(rio.tensor([1, 2, 2**40], kind="int32"))), "beyond the range of int"),
        (
            rio.frame(rio.record(rio.tensor([1.0], shape=[1] * 100_000, packed=False))),
            "record 1: Float32Tensor shape has more than one dimension; a record is one row",
        ),
        (rio.frame(rio.record(rio.field(2, b"\x08\x01"))), "Float32Tensor values: wire type 0"),
        (rio.frame(rio.record(rio.field(7, rio.field(1, b"\x80")))), "record 1: truncated varint"),
    ],
)
def test_malformed_bodies_are_400s_naming_the_record(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode(body)
    assert caught.value.status_code == 400
    assert message in str(caught.value)


@pytest.mark.parametrize("number", [1, 6_553, 6_554, 13_106, 13_107, 14_000])
def test_an_infinity_is_named_by_its_record_whichever_block_it_is_checked_in(number: int) -> None:
    """Rows are checked for infinities a block at a time (6,553 rows of 10 features): the
    first one is named by its record, at a block's first row, its last, or the last block's."""
    rows = np.ones((14_000, 10), dtype=np.float32)
    rows[number - 1, 7] = np.inf
    rows[-1, 9] = np.inf  # a later one is not the one named
    with pytest.raises(InvalidInput, match=f"record {number}, feature index 7: a value is infin"):
        decode(rio.dense(rows), 10)


def test_limits_are_checked_on_the_frames_before_records_are_parsed() -> None:
    body = rio.dense(np.ones((5, 3), np.float32))
    with pytest.raises(PayloadTooLarge, match="5 rows"):
        decode(body, max_rows=4)
    with pytest.raises(PayloadTooLarge, match="15 values"):
        decode(body, max_values=14)
    # a sparse body names a width its bytes do not pay for: max_values binds
    wide = rio.frame(rio.record(rio.tensor([1.0], keys=[0], shape=[1 << 30])))
    with pytest.raises(PayloadTooLarge):
        decode(wide + wide, None, max_values=1 << 24)
    assert decode(body, max_rows=5, max_values=15).shape == (5, 3)


def test_a_body_of_empty_frames_over_the_row_limit_is_refused_before_its_frames_are_built() -> None:
    """Frames are counted before a view of each is built (~200 bytes a view, for 8-byte empty
    frames): the refused 800 kB body peaked at 19.2 MB (24 bytes per byte) when its views were
    built first, and at ~1.6 kB counted first."""
    body = rio.frame(b"") * 100_000
    refusal: PayloadTooLarge | None = None
    with pytest.raises(PayloadTooLarge):  # once untraced: what a first call sets up is not its
        decode(body[:16_016], max_rows=1000)  # cost (~90 kB in a whole-suite run)
    tracemalloc.start()
    try:
        try:
            decode(body, max_rows=1000)
        except PayloadTooLarge as exc:
            refusal = exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the message matched outside the traced span: pytest.raises(match=) compiled its pattern
    # inside it, ~90 kB when re's cache had dropped it (seen in a whole-suite run)
    assert refusal is not None
    assert "at least 1001 rows; one request may carry at most 1000" in str(refusal)
    assert peak < len(body) // 4  # 200 kB, against 19.2 MB when the views came first


ROW = rio.frame(rio.record(rio.tensor([1.0, 2.0, 3.0])))  # a record of 3 features
BAD_MAGIC = rio.frame(b"", magic=0xDEADBEEF)


@pytest.mark.parametrize("budgets", [None, {codecs.RECORDIO: 1 << 30}], ids=["read", "budgeted"])
@pytest.mark.parametrize(
    ("limits", "refusal"),
    [
        ({"max_rows": 4}, "the body has {rows} rows; one request may carry at most 4"),
        (
            {"max_values": 14},  # 4 rows of 3 features
            "{rows} rows of 3 features make {values} values; one request may decode to at most 14",
        ),
    ],
    ids=["rows", "values"],
)
def test_frames_are_counted_no_further_than_one_past_a_limit(
    limits: dict[str, int], refusal: str, budgets: dict[str, int] | None
) -> None:
    """A body at the limit is read; one frame over, it is refused naming its frames; far over,
    its count stops at the frame past the limit ("at least" so many): a bad magic number after
    that frame is never reached (it was, and named, when every frame was counted: ~2 s of CPU
    for 25 MiB of empty frames). One before it is still the 400 naming its record."""

    def refused(body: bytes) -> str:
        with pytest.raises(PayloadTooLarge) as caught:
            codecs.decode(body, codecs.RECORDIO, 3, **limits, memory_budgets=budgets)
        return str(caught.value)

    at_limit = codecs.decode(ROW * 4, codecs.RECORDIO, 3, **limits, memory_budgets=budgets)
    np.testing.assert_array_equal(at_limit, np.tile(np.float32([1, 2, 3]), (4, 1)))
    assert refused(ROW * 5) == refusal.format(rows=5, values=15)
    far = refusal.format(rows="at least 5", values="at least 15")
    assert refused(ROW * 6) == far
    assert refused(ROW * 10_000) == far
    assert refused(ROW * 5 + BAD_MAGIC + ROW * 10) == far
    with pytest.raises(InvalidInput, match="record 5: bad magic number 0xdeadbeef"):
        codecs.decode(ROW * 4 + BAD_MAGIC + ROW * 10, codecs.RECORDIO, 3, **limits)


def test_frames_are_counted_no_further_than_the_first_over_the_memory_budget() -> None:
    """Without a row limit (the async worker's reads), the count stops at the first frame
    whose estimate is over the budget (it grows a frame at a time): a body within it is
    read; one just over is refused naming its whole estimate; a far larger one, or one with
    a bad magic number past that frame, naming the estimate of the frames counted."""
    cost = codecs.PYTHON_READ_COST[codecs.RECORDIO]
    body = ROW * 10
    budget = cost.estimate(10, len(body), 3)

    def refused(body: bytes, budget: int) -> str:
        with pytest.raises(PayloadTooLarge) as caught:
            codecs.decode(body, codecs.RECORDIO, 3, memory_budgets={codecs.RECORDIO: budget})
        return str(caught.value)

    read = codecs.decode(body, codecs.RECORDIO, 3, memory_budgets={codecs.RECORDIO: budget})
    assert read.shape == (10, 3)
    assert f"at an estimated {budget} bytes of memory (10 rows x 16 + " in refused(body, budget - 1)
    for far in (ROW * 10 + ROW * 10_000, ROW * 10 + BAD_MAGIC + ROW * 10_000):
        within = cost.estimate(9, len(far), 3)  # the tenth frame is the first over it
        assert rio.frames_over(within, len(far), 3) == 10
        estimate = cost.estimate(10, len(far), 3)
        assert (
            f"at an estimated at least {estimate} bytes of memory (at least 10 rows x 16 + "
            f"{len(far)} bytes x 6 + a matrix of at least 10 rows x 3 features x 4)"
        ) in refused(far, within)
    bytes_over = cost.estimate(0, len(body) * 1000) - 1  # its bytes alone: one frame counted
    assert "(at least 1 rows x 16 + " in refused(body * 1000, bytes_over)
    early = ROW * 9 + BAD_MAGIC + ROW * 10_000  # the first frame over the budget is bad
    budgets = {codecs.RECORDIO: cost.estimate(9, len(early), 3)}
    with pytest.raises(InvalidInput, match="record 10: bad magic number"):
        codecs.decode(early, codecs.RECORDIO, 3, memory_budgets=budgets)


VALID = rio.dense(np.array([[1, 2, 3]], np.float32)) + bytes.fromhex(PROTOBUF_WRITTEN["sparse"])


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_any_payload_or_damaged_body_decodes_or_is_a_4xx(profile: object) -> None:
    """Random payloads in well-formed frames reach the protobuf reader; valid bodies with bytes
    overwritten reach everything else."""

    @given(
        payload=st.binary(max_size=64),
        position=st.integers(0, len(VALID) - 1),
        damage=st.binary(min_size=1, max_size=8),
        width=st.sampled_from([None, 3]),
    )
    def check(payload: bytes, position: int, damage: bytes, width: int | None) -> None:
        damaged = VALID[:position] + damage + VALID[position + len(damage) :]
        for body in (rio.frame(payload), damaged):
            try:
                decode(body, width, max_rows=4, max_values=1 << 20)
            except InfermodesError as exc:
                assert 400 <= exc.status_code < 500 and str(exc)

    profile(check)()  # type: ignore[operator]
